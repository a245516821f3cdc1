"""Readers of the published dataset formats, one class per format (torchxrayvision style).

Each returns raw uint8 images (``load_raw``) and float32 1 / 0 / NaN labels; the registry that
builds them by name is :mod:`fact_fast.data.datasets` (the readers never import it). Shared
parts: ``image_files`` (decoding image files), ``tables`` (label CSVs), ``dicom`` (CT slices).
"""
from .chestmnist import ChestMNIST
from .chexpert import CheXpert
from .csv_folder import CSVImageDataset
from .cxr_lt import CXRLT, build_cxr_lt
from .image_files import INTENSITY_MODES, FileImageDataset, high_bit_to_uint8, read_image_file
from .nih import NIHChestXray14
from .odir import ODIR5K, build_odir
from .rsna_ihd import RSNAIHD, build_rsna_ihd
from .tables import BLANK_POLICIES, UNCERTAIN_POLICIES, LabelDecoder

__all__ = ["ChestMNIST", "CheXpert", "CSVImageDataset", "NIHChestXray14", "ODIR5K", "CXRLT", "RSNAIHD",
           "build_odir", "build_cxr_lt", "build_rsna_ihd", "FileImageDataset", "read_image_file",
           "high_bit_to_uint8", "INTENSITY_MODES", "UNCERTAIN_POLICIES", "BLANK_POLICIES", "LabelDecoder"]
