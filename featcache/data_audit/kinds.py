"""The kinds of finding an audit reports, in the order shown, and their titles."""

# the order the report and the terminal summary show them in: leaks first
KINDS = ("cross-split-exact", "cross-split-near", "exact-duplicate", "near-duplicate",
         "label-issue", "outlier")
KIND_TITLES = {
    "cross-split-exact": "byte-identical images in two splits (leaks)",
    "cross-split-near": "near-identical images in two splits (leaks)",
    "exact-duplicate": "byte-identical images inside a split",
    "near-duplicate": "near-identical images inside a split",
    "label-issue": "likely label errors",
    "outlier": "outliers (far from every training image)",
}
