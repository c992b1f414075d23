"""ModuSeg's first-party components. Each submodule named in the ``moduseg``
entry-point group is a plugin: it registers through the same hooks a third-party
package uses, and imports its heavy libraries only inside factories."""
