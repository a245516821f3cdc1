"""Built-in label sets (class-name lists) of the datasets fact_fast knows.

Pure Python, no imports: ``scripts/make_label_embeddings.py`` loads this file on its own
to compute the shipped text embeddings.
"""

# The earlier synthetic motif dataset (fact_fast.data.synthetic.motifs, "synthetic_motifs"; the default
# synthetic benchmark uses NIH_CLASS_NAMES). The names are disease-like so
# that text embeddings are meaningful, but the classes are synthetic visual motifs, ordered
# from most to least frequent.
SYNTHETIC_CLASS_NAMES = [
    "Effusion",
    "Atelectasis",
    "Cardiomegaly",
    "Infiltration",
    "Edema",
    "Nodule",
    "Consolidation",
    "Mass",
    "Pneumothorax",
    "Emphysema",
    "Fibrosis",
    "Hernia",
]

# NIH ChestX-ray14 and MedMNIST ChestMNIST (same 14 findings, same order).
NIH_CLASS_NAMES = [
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
]

# CheXpert (and MIMIC-CXR-JPG's CheXpert-labeler tables): the 14 observation columns of
# train.csv / valid.csv, in file order.
CHEXPERT_CLASS_NAMES = [
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
]

# ODIR-5K (ocular disease recognition), the 8 columns N, D, G, C, A, H, M, O.
ODIR_CLASS_NAMES = [
    "Normal",
    "Diabetes",
    "Glaucoma",
    "Cataract",
    "Age related Macular Degeneration",
    "Hypertension",
    "Pathological Myopia",
    "Other diseases/abnormalities",
]

# RSNA intracranial hemorrhage detection (CT).
RSNA_IHD_CLASS_NAMES = [
    "any",
    "epidural",
    "intraparenchymal",
    "intraventricular",
    "subarachnoid",
    "subdural",
]

# CXR-LT 2023 (MIMIC-CXR long-tailed, 26 classes): the class columns of the challenge's
# train.csv / development.csv / test.csv, in file order (alphabetical, "No Finding" included).
CXR_LT_2023_CLASS_NAMES = [
    "Atelectasis",
    "Calcification of the Aorta",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Enlarged Cardiomediastinum",
    "Fibrosis",
    "Fracture",
    "Hernia",
    "Infiltration",
    "Lung Lesion",
    "Lung Opacity",
    "Mass",
    "No Finding",
    "Nodule",
    "Pleural Effusion",
    "Pleural Other",
    "Pleural Thickening",
    "Pneumomediastinum",
    "Pneumonia",
    "Pneumoperitoneum",
    "Pneumothorax",
    "Subcutaneous Emphysema",
    "Support Devices",
    "Tortuous Aorta",
]

# CXR-LT 2024 task 1 (MIMIC-CXR long-tailed, 40 classes), alphabetical as in the FACT paper's
# Tab. 14 and in the class columns of the challenge's train_labeled.csv.
CXR_LT_CLASS_NAMES = [
    "Adenopathy",
    "Atelectasis",
    "Azygos Lobe",
    "Calcification of the Aorta",
    "Cardiomegaly",
    "Clavicle Fracture",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Enlarged Cardiomediastinum",
    "Fibrosis",
    "Fissure",
    "Fracture",
    "Granuloma",
    "Hernia",
    "Hydropneumothorax",
    "Infarction",
    "Infiltration",
    "Kyphosis",
    "Lobar Atelectasis",
    "Lung Lesion",
    "Lung Opacity",
    "Mass",
    "Nodule",
    "Normal",
    "Pleural Effusion",
    "Pleural Other",
    "Pleural Thickening",
    "Pneumomediastinum",
    "Pneumonia",
    "Pneumoperitoneum",
    "Pneumothorax",
    "Pulmonary Embolism",
    "Pulmonary Hypertension",
    "Rib Fracture",
    "Round(ed) Atelectasis",
    "Subcutaneous Emphysema",
    "Support Devices",
    "Tortuous Aorta",
    "Tuberculosis",
]

# label set name -> (class names, prompt template)
LABEL_SETS = {
    "synthetic": (SYNTHETIC_CLASS_NAMES, "a chest x-ray showing {}"),
    "nih14": (NIH_CLASS_NAMES, "a chest x-ray showing {}"),
    "chexpert": (CHEXPERT_CLASS_NAMES, "a chest x-ray showing {}"),
    "odir": (ODIR_CLASS_NAMES, "a fundus photograph showing {}"),
    "rsna_ihd": (RSNA_IHD_CLASS_NAMES, "a head CT scan showing {} hemorrhage"),
    "cxr_lt": (CXR_LT_CLASS_NAMES, "a chest x-ray showing {}"),
    "cxr_lt_2023": (CXR_LT_2023_CLASS_NAMES, "a chest x-ray showing {}"),
}

# dataset names (as users type them) -> label set name
DATASET_TO_LABEL_SET = {
    "synthetic": "nih14",
    "synthetic_motifs": "synthetic",
    "nih": "nih14",
    "nih14": "nih14",
    "chestx-ray14": "nih14",
    "chestxray14": "nih14",
    "chestmnist": "nih14",
    "chexpert": "chexpert",
    "mimic_cxr": "chexpert",
    "odir": "odir",
    "odir5k": "odir",
    "odir-5k": "odir",
    "rsna": "rsna_ihd",
    "rsna_ihd": "rsna_ihd",
    "rsna-ihd": "rsna_ihd",
    "cxr_lt": "cxr_lt",
    "cxr-lt": "cxr_lt",
    "cxrlt": "cxr_lt",
    "cxr_lt_2023": "cxr_lt_2023",
}


def prompt_text(name: str, template: str) -> str:
    """The text embedded for one class: a short prompt naming the finding."""
    name = name.replace("_", " ")
    if name.lower() in ("normal", "no finding"):
        return template.format("no abnormality, normal findings")
    return template.format(name)
