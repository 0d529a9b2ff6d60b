"""Image data: sources (folders, keras datasets, digits), the split types, the tf.data
pipeline and augmentation. Imports run one way: load -> sources -> splits.
"""
