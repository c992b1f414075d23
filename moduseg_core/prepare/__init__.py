"""``moduseg prepare``: official dataset downloads → the layouts the dataset plugins read.

One module per dataset (``coco``, ``voc``, ``ade20k``, ``cityscapes``), each with one
``prepare_<name>`` function that checks every input before it writes anything, writes its output
folder atomically (``outputs.OutputDir``: a killed job leaves a folder marked incomplete, rerun
into it), shows progress and returns a summary (images, classes present, ignore pixels per split;
also written as ``prepare_summary.json``). ``common`` holds what they share. Nothing heavy is
imported here; pycocotools loads inside ``prepare_coco``. docs/prepare.md describes the layouts.
"""
