"""Published MedMNIST reference numbers, quoted (never the project's own results).

    official_numbers("pneumoniamnist")
    -> [OfficialRow(method="ResNet-18 (28)", acc=0.854, auc=0.944, source="MedMNIST v2 ..."), ...]

Test-split ACC and AUC at 28-pixel input, as printed in the sources below (see also
docs/anchors.md). "(224)" in the MedMNIST v2 methods means the 28-pixel image upsampled to 224
with nearest-neighbour resizing. MedMNIST+ gives one best-over-many-models figure per dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

MEDMNIST_V2 = "MedMNIST v2 benchmark, test split, 28-pixel input (Yang et al., Scientific Data 2023; medmnist.com)"
MEDMNIST_PLUS = "MedMNIST+, best of many ImageNet-pretrained models at 28 pixels (Doerrich et al. 2024)"

METHODS_2D = ("ResNet-18 (28)", "ResNet-18 (224)", "ResNet-50 (28)", "ResNet-50 (224)", "auto-sklearn", "AutoKeras", "Google AutoML Vision")
METHODS_3D = ("ResNet-18+2.5D", "ResNet-18+3D", "ResNet-18+ACS", "ResNet-50+2.5D", "ResNet-50+3D", "ResNet-50+ACS", "auto-sklearn", "AutoKeras")

# flag -> "AUC/ACC" per method, in the column order of METHODS_2D / METHODS_3D (as in the source tables).
_V2_2D = {
    "pathmnist": ".983/.907 .989/.909 .990/.911 .989/.892 .934/.716 .959/.834 .944/.728",
    "chestmnist": ".768/.947 .773/.947 .769/.947 .773/.948 .649/.779 .742/.937 .778/.948",
    "dermamnist": ".917/.735 .920/.754 .913/.735 .912/.731 .902/.719 .915/.749 .914/.768",
    "octmnist": ".943/.743 .958/.763 .952/.762 .958/.776 .887/.601 .955/.763 .963/.771",
    "pneumoniamnist": ".944/.854 .956/.864 .948/.854 .962/.884 .942/.855 .947/.878 .991/.946",
    "retinamnist": ".717/.524 .710/.493 .726/.528 .716/.511 .690/.515 .719/.503 .750/.531",
    "breastmnist": ".901/.863 .891/.833 .857/.812 .866/.842 .836/.803 .871/.831 .919/.861",
    "bloodmnist": ".998/.958 .998/.963 .997/.956 .997/.950 .984/.878 .998/.961 .998/.966",
    "tissuemnist": ".930/.676 .933/.681 .931/.680 .932/.680 .828/.532 .941/.703 .924/.673",
    "organamnist": ".997/.935 .998/.951 .997/.935 .998/.947 .963/.762 .994/.905 .990/.886",
    "organcmnist": ".992/.900 .994/.920 .992/.905 .993/.911 .976/.829 .990/.879 .988/.877",
    "organsmnist": ".972/.782 .974/.778 .972/.770 .975/.785 .945/.672 .974/.813 .964/.749",
}
_V2_3D = {
    "organmnist3d": ".977/.788 .996/.907 .994/.900 .974/.769 .994/.883 .994/.889 .977/.814 .979/.804",
    "nodulemnist3d": ".838/.835 .863/.844 .873/.847 .835/.848 .875/.847 .886/.841 .914/.874 .844/.834",
    "fracturemnist3d": ".587/.451 .712/.508 .714/.497 .552/.397 .725/.494 .750/.517 .628/.453 .642/.458",
    "adrenalmnist3d": ".718/.772 .827/.721 .839/.754 .732/.763 .828/.745 .828/.758 .828/.802 .804/.705",
    "vesselmnist3d": ".748/.846 .874/.877 .930/.928 .751/.877 .907/.918 .912/.858 .910/.915 .773/.894",
    "synapsemnist3d": ".634/.696 .820/.745 .705/.722 .669/.735 .851/.795 .719/.709 .631/.730 .538/.724",
}
# flag -> (ACC %, AUC %) as printed.
_PLUS = {
    "breastmnist": (86.54, 89.08),
    "pneumoniamnist": (86.59, 97.29),
    "pathmnist": (88.93, 98.57),
    "dermamnist": (76.58, 92.69),
    "retinamnist": (54.25, 75.35),
}


@dataclass(frozen=True)
class OfficialRow:
    method: str
    acc: float  # test accuracy, fraction
    auc: float  # test AUC, fraction
    source: str  # citation of the published table


def official_numbers(flag: str) -> list[OfficialRow]:
    """Published test ACC/AUC for a MedMNIST flag (e.g. "pathmnist"; a size suffix such as
    "pathmnist_64" is ignored: all quoted numbers are at 28 pixels). [] for other datasets."""
    flag = flag.lower().split("_")[0]
    rows = []
    for table, methods in ((_V2_2D, METHODS_2D), (_V2_3D, METHODS_3D)):
        for method, cell in zip(methods, table.get(flag, "").split()):
            auc, acc = (float(v) for v in cell.split("/"))
            rows.append(OfficialRow(method, acc, auc, MEDMNIST_V2))
    if flag in _PLUS:
        acc, auc = _PLUS[flag]
        rows.append(OfficialRow("best pretrained model (MedMNIST+)", acc / 100, auc / 100, MEDMNIST_PLUS))
    return rows
