"""The Fine-T2I paper's published numbers (arXiv 2602.09439v1), for the taxonomy test and the report.

These are facts about the paper's release, not settings: they stay fixed when a user re-weights
``config/taxonomy.yaml``. The tables are kept as the paper prints them (Tables 2, 5, 6, 7) and parsed once, so
each number can be checked against the PDF line by line.
"""

from __future__ import annotations

SUBSETS: tuple[str, ...] = ("pe_ar", "pe_as", "po_ar", "po_as")

# Table 2: final samples per synthetic subset. Table 3 / section 3.2: the curated real-image set.
SUBSET_COUNTS: dict[str, int] = {
    "pe_ar": 1_615_592, "pe_as": 1_538_253, "po_ar": 1_686_498, "po_as": 1_305_350,
}
REAL_COUNT = 168_424
REAL_DOWNLOADED = 233_342 + 163_524 + 24_997  # Table 3: Pexels + Pixabay + Unsplash-Lite

# Section 3.1: the synthetic funnel. "generate" is the number of prompts rendered per subset x 4 subsets
# (the paper writes ~20.6M images); pair_filter keeps the sum of Table 2.
FUNNEL: dict[str, int] = {
    "prompts": 44_800_567,  # 3.1.1: controlled prompts of >= 5 words
    "dedup": 5_555_147,  # 3.1.2: after semantic dedup at cosine > 0.8
    "guard": 5_497_062,  # 3.1.3: after Llama-Guard-3 and the 150-word cut
    "attributes": 5_158_969,  # 3.1.3: after the style/category check
    "generate": 4 * 5_158_969,  # 3.1.5: one best-of-1..3 image per prompt and subset
    "pair_filter": 6_145_693,  # 3.1.6 / Table 2
}

# Fig. 4a: category shares of the synthetic set (percent). Table 6's totals give the same shares.
CATEGORY_PERCENT: dict[str, float] = {
    "People": 37.9, "Nature": 27.8, "Text rendering": 17.4, "Design": 10.6, "Rare": 6.3,
}

# Fig. 5 / section 4: aesthetic-score bins quoted in the text (fraction of the subset).
AESTHETIC_BINS: dict[str, dict[str, float]] = {
    "synthetic": {"[5.5,6.0)": 0.3664, "[6.0,6.5)": 0.3570},
    "real": {"[6.5,7.0)": 0.6321},
}
AESTHETIC_THRESHOLDS: dict[str, float] = {"synthetic": 5.5, "real": 6.5}
DEDUP_THRESHOLD = 0.8  # Fig. 3

_TABLE5 = """
3D & CGI|60309|58141|62090|47831|228371
Abstract & Artistic|143509|138761|139430|109619|531319
Anime|189551|183866|189392|143096|705905
Cartoon & Illustration|134538|132375|140222|112841|519976
Cultural & Folk Art|141827|128671|161804|123120|555422
Futuristic & Sci-Fi|92631|92110|86677|59929|331347
Graphic & Digital|210362|200629|221038|175241|807270
Others|36275|34006|37378|29387|137046
Traditional/modern Art|155099|149882|159576|125033|589590
Vintage & Retro|124268|114807|151822|115733|506630
General & Photorealistic|327223|305005|337069|263520|1232817
"""

_TABLE6 = """
Design|Arts|59722|56909|67021|51893|235545
Design|Cartoon|21975|22994|25973|20517|91459
Design|Creative|3734|3593|4245|3267|14839
Design|Logos|3434|3616|3240|2489|12779
Design|Posters|28819|27444|28142|21159|105564
Design|Rare cases|4963|4736|5654|4050|19403
Design|Slides|19475|18751|17708|13326|69260
Design|UI/UX|28266|27310|28417|20424|104417
Nature|Animals|59710|57187|66406|51122|234425
Nature|Cityscape|64063|58235|71190|52812|246300
Nature|Creative|4540|4336|4703|3694|17273
Nature|Food|61647|56695|77209|61570|257121
Nature|Indoor|47106|43443|57773|45450|193772
Nature|Landscape|35308|33341|35869|28995|133513
Nature|Objects / Entities|122078|115692|131568|102185|471523
Nature|Plants|34259|32686|36440|29212|132597
Nature|Rare cases|6330|5869|6187|4674|23060
People|Activities|149561|136908|174234|136109|596812
People|Age|61683|57572|67566|54927|241748
People|Creative|11868|11057|13494|10478|46897
People|Emotions|98799|93809|101281|82550|376439
People|Portrait|219778|209840|242322|197778|869718
People|Rare cases|10186|9289|8822|6290|34587
People|Sports|42077|38626|47790|33910|162403
Rare|Rare cases|104062|100557|105787|76979|387385
Text rendering|Creative|5466|5425|4755|3598|19244
Text rendering|Handwriting|13841|13614|11586|8692|47733
Text rendering|Long text|74115|70762|43075|29381|217333
Text rendering|Rare cases|3938|3770|3172|2209|13089
Text rendering|Short text|111131|110970|101908|77247|401256
Text rendering|Stylized text|23797|24374|20920|15560|84651
Text rendering|Text in scene|79861|78843|72041|52803|283548
"""

_TABLE7 = """
Colors|84885|81386|89151|70316|325738
Counting|83826|77285|76807|56341|294259
Position|101398|96048|103106|80280|380832
Reasoning|127420|118657|136928|106034|489039
Colors + Counting|29754|27932|25489|18589|101764
Colors + Position|40304|38229|40570|31972|151075
Colors + Reasoning|46128|43543|48277|37638|175586
Counting + Position|37795|35262|33496|24721|131274
Counting + Reasoning|38366|35129|34176|24983|132654
Position + Reasoning|49698|46546|50872|39317|186433
Not Specified|976018|938236|1047626|815159|3777039
"""


def _parse(text: str, key_cols: int) -> dict[tuple[str, ...], dict[str, int]]:
    out: dict[tuple[str, ...], dict[str, int]] = {}
    for line in text.strip().splitlines():
        parts = line.split("|")
        key, nums = tuple(parts[:key_cols]), [int(x) for x in parts[key_cols:]]
        row = dict(zip(SUBSETS, nums[:4], strict=True))
        if sum(row.values()) != nums[4]:  # the printed total must be the sum of the subsets
            raise AssertionError(f"paper table row {key}: subsets add up to {sum(row.values())}, "
                                 f"not {nums[4]}")
        out[key] = {**row, "total": nums[4]}
    return out


# Per-subset counts with a "total" column, keyed as the paper labels rows.
STYLE_TABLE: dict[str, dict[str, int]] = {k[0]: v for k, v in _parse(_TABLE5, 1).items()}
SUBCATEGORY_TABLE: dict[tuple[str, str], dict[str, int]] = {
    (k[0], k[1]): v for k, v in _parse(_TABLE6, 2).items()
}
TASK_TABLE: dict[str, dict[str, int]] = {k[0]: v for k, v in _parse(_TABLE7, 1).items()}


def _shares(counts: dict[str, float]) -> dict[str, float]:
    total = float(sum(counts.values()))
    return {k: v / total for k, v in counts.items()}


def marginals() -> dict[str, dict[str, float]]:
    """The paper's target distributions (each sums to 1) that sampled specs and the final dataset are held to.

    ``subcategory`` is the joint (category, subcategory) distribution keyed ``"Category / Subcategory"``:
    Fig. 4a's category share times the sub-category's share of its category's Table 6 total.
    """
    category = _shares(CATEGORY_PERCENT)
    cat_totals: dict[str, int] = {}
    for (cat, _), row in SUBCATEGORY_TABLE.items():
        cat_totals[cat] = cat_totals.get(cat, 0) + row["total"]
    joint = {f"{cat} / {sub}": category[cat] * row["total"] / cat_totals[cat]
             for (cat, sub), row in SUBCATEGORY_TABLE.items()}
    return {
        "category": category,
        "subcategory": joint,
        "style": _shares({k: v["total"] for k, v in STYLE_TABLE.items()}),
        "task": _shares({k: v["total"] for k, v in TASK_TABLE.items()}),
    }


def total_variation(p: dict[str, float], q: dict[str, float]) -> float:
    """Total-variation distance of two distributions over labels (missing labels count as 0)."""
    keys = sorted(set(p) | set(q))  # a fixed order: a float sum depends on it, and a report must not vary
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in keys)
