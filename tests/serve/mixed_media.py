"""A folder of pictures, tones and texts for the tests of searching several modalities."""


def write_mixed_folder(folder):
    """Pictures, tones and texts in two sub-folders (day: 2 + 2 + 2, night: 2 + 2 + 2): twelve
    items of three modalities, filterable by the metadata key ``folder``."""
    import numpy as np
    import soundfile
    from PIL import Image

    t = np.arange(8000) / 16000
    for sub, colours, tones, texts in (
            ("day", ("red", "green"), (220, 330), ("a red circle", "a green square")),
            ("night", ("blue", "yellow"), (440, 550), ("a low hum", "a high tone"))):
        (folder / sub).mkdir(parents=True)
        for colour in colours:
            Image.new("RGB", (40, 30), colour).save(folder / sub / f"{colour}.png")
        for hz in tones:
            soundfile.write(folder / sub / f"tone-{hz}.wav", 0.3 * np.sin(2 * np.pi * hz * t), 16000)
        for text in texts:
            (folder / sub / f"{text.replace(' ', '-')}.txt").write_text(text)
    return folder
