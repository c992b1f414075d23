"""The contract: what a component is and how it is found, with nothing behind it.

The values passed between components (``types``), the protocol of each kind (``protocols``), the options base class
(``options``), the kinds in data-path order (``kinds``), the hooks a plugin implements (``hookspecs``), the registry
(``plugins``), a run's configuration (``config``), building a config's components (``components``) and the one error a
user can fix (``errors``). It imports nothing from the other layers.
"""
