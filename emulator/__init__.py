"""An offline stand-in for the TabPFN cloud API, for tests and demos.

It speaks the wire protocol of tabpfn-client 0.6.1, but its predictions come from a
small scikit-learn random forest, not from TabPFN.
"""
