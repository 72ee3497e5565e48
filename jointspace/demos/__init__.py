"""The end-to-end demos on the built-in shapes dataset (``jointspace demo``).

* :mod:`.shapes`: data → train → eval → index → search, image–text
  (:func:`~jointspace.demos.shapes.run_demo`);
* :mod:`.audio`: bind an audio tower to that model through images alone and compare it
  with one trained on audio–text pairs (:func:`~jointspace.demos.audio.run_audio_demo`).
"""
