"""The pipeline: the method's data path over the contract's components.

A bank built from a split (``bank_build``) and saved (``bank``); images labelled against it (``inference``, streamed by
``streaming``); whole runs (``runner``), image files (``predict_files``), the Python API (``segmenter``) and a labeler's
pseudo masks scored alone (``label_eval``). It reads and writes through ``moduseg_core.files``.
"""
