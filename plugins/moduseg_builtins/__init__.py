"""ModuSeg's first-party components, one package per kind in the order of the data path:
``datasets``, ``labelers``, ``proposers``, ``purifiers``, ``encoders``, ``aggregators``, ``indexes``.

Each kind package is one entry point of the ``moduseg`` group: it registers its components
through the same hooks a third-party package uses, and its factories import heavy libraries
only when a component is built. ``_shared`` holds what every kind shares (device and dtype
options, image checks). docs/architecture.md describes the layout.
"""
