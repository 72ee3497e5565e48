"""The self-contained HTML reports of ``jointspace eval`` and ``jointspace compare``.

Everything is inside the file (plots as base64 PNGs drawn with matplotlib's Agg
backend, items as their plug-ins' previews in data URIs, CSS inline, no script):
it opens offline, makes no network request and can be mailed as one attachment.

* :mod:`.html`: the page shell, tables, figures; :mod:`.plots`: the plots;
  :mod:`.previews`: items as previews; :mod:`.model_info`: what a model is;
* :mod:`.evaluation` (:func:`write_report`) with :mod:`.sections` and
  :mod:`.qualitative`: ``report.html`` of an evaluation;
* :mod:`.compare_page`: ``report.html`` of a comparison of two models.
"""
from .evaluation import REPORT_FILE, write_report
from .html import STYLE, html_table
from .model_info import ModelInfo, describe_folder, describe_model

__all__ = ["REPORT_FILE", "STYLE", "ModelInfo", "describe_folder", "describe_model", "html_table",
           "write_report"]
