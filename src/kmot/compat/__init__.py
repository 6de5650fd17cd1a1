"""Compatibility namespaces for code written for other toolkits.

`kmot.compat.tfmot` is shaped like ``tensorflow_model_optimization``, so that
tfmot-style code runs on Keras 3 after one changed import::

    import kmot.compat.tfmot as tfmot
"""
