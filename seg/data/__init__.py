"""Datasets on disk and generated: layouts, mask decoding, splits, caching, the LightningDataModule."""
