"""GliomaMTL engine: glioma segmentation, genotype prediction and synthetic data, without Slicer.

Array convention everywhere in this package: NumPy arrays are indexed ``[z, y, x]`` exactly as
``SimpleITK.GetArrayFromImage`` returns them; ``Geometry.size`` is ITK order ``(x, y, z)``.
"""

__version__ = "0.1.0"
