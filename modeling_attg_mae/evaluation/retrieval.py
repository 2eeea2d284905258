"""Image retrieval with a frozen ViT: DINO's `eval_image_retrieval` protocol, scored as revisitop's `compute_map`.

Features: `extract_features` (CLS by default, or the mean / GeM of the patch tokens), L2-normalised; with
`multi_scale` DINO's average over the input at scales 1, 1/sqrt(2), 1/2 (`extract_multi_scale_features`).
Ranking: cosine similarity to every database image, best first. Scores, per query then averaged:

* AP as revisitop's `compute_ap`: the trapezoids of the precision-recall curve, with the junk images of the
  query removed from the ranking before the positions of its positives are counted;
* mP@k as revisitop's `compute_map`: precision at `kq = min(k, position of the last positive)`, so a query
  with fewer than k positives is not capped below 1;
* a query with no positive (an empty `ok` list) gets NaN and is left out of both means (`num_empty`).

Two inputs:

* the revisited Oxford / Paris layout (Radenovic et al., 2018): a ground-truth file (`gnd_roxford5k.pkl`,
  read with a restricted unpickler, or its JSON conversion) + the image folder; queries cropped to their `bbx`;
  reported for the three protocols, Easy (positives easy, junk junk + hard), Medium (positives easy + hard,
  junk junk) and Hard (positives hard, junk junk + easy). Images are encoded as DINO does: the longer side
  shrunk to `image_size` (aspect kept, never enlarged), no crop, one image per forward pass;
* any labelled dataset: database = the train split, queries = each eval split, positives = the database images
  of the query's label, no junk (the evaluation transform of k-NN: resize + center crop).

Convert a ground-truth pickle to JSON once (then no pickle is read again):

    python -m modeling_attg_mae.evaluation.retrieval convert-gnd gnd_roxford5k.pkl gnd_roxford5k.json

Results JSON, `<output_dir>/retrieval_results.json`, schema version 1:

    {
      "schema_version": 1, "checkpoint": "<model_name_or_path>", "dataset": "roxford5k" | "<dataset label>",
      "input": "revisited" | "labels", "train_split": null | "train" (the database split of "labels"),
      "pooling": "cls" | "mean" | "gem", "multi_scale": false, "scales": [1.0], "kappas": [1, 5, 10],
      "num_database": 4993, "num_processes": 1,
      revisited only: "gnd_file": "...", "gnd_content_sha256": "<64 hex>", "images_dir": ".../jpg",
        "crop_queries": true, "image_size": 224,
      labels only: "num_classes": 10,
      "results": [
        {"method": "retrieval", "split": "query" | "<eval split>", "protocol": "easy" | "medium" | "hard" | "same_label",
         "map": 61.3, "mp_at_k": {"1": 85.7, "5": 80.0, "10": 74.1}, "num_queries": 70, "num_empty": 0,
         "num_database": 4993, "multi_scale": false, "k": null, "shots": null, "seed": null,
         revisited only: "crop_queries": true, "image_size": 224, "image_size_is_default": true (the checkpoint's),
           "gnd_content_sha256": "<64 hex>"}, ...
      ]
    }

`map` and `mp_at_k` are in percent, means over the `num_queries - num_empty` queries that have a positive
(null when there is none). `k` / `shots` / `seed` are null (the k-NN rows' keys, kept for one row format).
`gnd_content_sha256` names the ground truth by its content (the same for a pickle and its JSON conversion, another
for any other ground truth): the model card files each ground truth's results apart under it, so that two files
of the same name (`gnd.pkl` in two folders) never replace or mix each other's entries.
"""

import argparse
import hashlib
import json
import logging
import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..features import MULTI_SCALES

logger = logging.getLogger(__name__)

DEFAULT_KAPPAS = (1, 5, 10)
# protocol -> (lists whose images are positives, lists whose images are junk), revisitop's `example_evaluate.py`
PROTOCOLS = {
    "easy": (("easy",), ("junk", "hard")),
    "medium": (("easy", "hard"), ("junk",)),
    "hard": (("hard",), ("junk", "easy")),
}
GND_KEYS = ("imlist", "qimlist", "gnd")
GND_LISTS = ("easy", "hard", "junk")
# the similarity / ranking block of one chunk of queries stays under this many bytes (a 1M-image database)
MAX_CHUNK_BYTES = 256 * 2**20
RESULTS_FILE = "retrieval_results.json"
# a query box may overhang its image by this many pixels (rounding of the annotation); it is clipped to the image
BBX_TOLERANCE = 1.0


# ----------------------------------------------------------------------------------------------- scoring


@dataclass
class RetrievalScores:
    """revisitop's `compute_map` outputs, in [0, 1] (not percent).

    `map`: mean AP over the non-empty queries (NaN when all are empty); `aps`: `(Q,)` float64, NaN for an
    empty query; `mp`: `{k: mean precision at k}`; `prs`: `(Q, K)` float64 per query; `num_empty`: queries
    without a positive.
    """

    map: float
    aps: torch.Tensor
    mp: dict[int, float]
    prs: torch.Tensor
    num_empty: int


def _scores_from_positions(row: torch.Tensor, rank: torch.Tensor, num_positives: torch.Tensor, kappas) -> tuple:
    """AP `(c,)` and precision at `kappas` `(c, K)` (float64, NaN for an empty query) from the positives' ranks.

    `row`, `rank`: one entry per positive found in the ranking, sorted by (row, rank); `rank` is its 0-based
    position once the query's junk is removed. `num_positives`: `(c,)`, revisitop's `len(qgnd)`, the
    denominator of AP even for positives the ranking does not hold.
    """
    num_queries = num_positives.shape[0]
    device = row.device
    rank = rank.double()
    counts = torch.bincount(row, minlength=num_queries)
    starts = counts.cumsum(0) - counts
    j = torch.arange(row.numel(), device=device, dtype=torch.float64) - starts[row].double()  # j-th positive of its query
    # compute_ap's trapezoid: precision before (j / rank, 1 at rank 0) and after ((j + 1) / (rank + 1)) the j-th hit
    precision_0 = torch.where(rank == 0, 1.0, j / rank.clamp(min=1))
    precision_1 = (j + 1) / (rank + 1)
    aps = torch.zeros(num_queries, dtype=torch.float64, device=device).index_add_(0, row, (precision_0 + precision_1) / 2)
    aps = aps / num_positives.double().clamp(min=1)
    # mP@k: kq = min(k, 1-based position of the last positive), precision = positives within kq / kq
    found = counts > 0
    last = torch.zeros(num_queries, dtype=torch.float64, device=device)
    last[found] = rank[(starts + counts - 1)[found]] + 1
    prs = torch.zeros(num_queries, len(kappas), dtype=torch.float64, device=device)
    for index, k in enumerate(kappas):
        kq = last.clamp(max=float(k))  # 0 only when the ranking holds none of the positives: precision 0
        hits = torch.zeros(num_queries, dtype=torch.float64, device=device).index_add_(0, row, (rank + 1 <= kq[row]).double())
        prs[:, index] = torch.where(kq > 0, hits / kq.clamp(min=1), 0.0)
    empty = num_positives == 0
    aps[empty] = float("nan")
    prs[empty] = float("nan")
    return aps.cpu(), prs.cpu()


def _summarise(aps: torch.Tensor, prs: torch.Tensor, kappas) -> RetrievalScores:
    valid = ~torch.isnan(aps)
    num_valid = int(valid.sum())
    mean_ap = float(aps[valid].sum() / num_valid) if num_valid else float("nan")
    mp = {int(k): (float(prs[valid, i].sum() / num_valid) if num_valid else float("nan")) for i, k in enumerate(kappas)}
    return RetrievalScores(map=mean_ap, aps=aps, mp=mp, prs=prs, num_empty=int(aps.numel() - num_valid))


def _check_kappas(kappas) -> tuple[int, ...]:
    kappas = tuple(int(k) for k in kappas)
    if not kappas or min(kappas) < 1:
        raise ValueError(f"kappas must be positive integers, got {kappas}")
    return kappas


def _index_lists(lists, num_database: int, names) -> list[np.ndarray]:
    """Every list as an int64 array of database indices, checked in one pass over all of them; `names[i]` (or
    `f"{names}[{i}]"` for a string) says in error messages which list is wrong."""
    label = (lambda i: names[i]) if not isinstance(names, str) else (lambda i: f"{names}[{i}]")
    arrays = [np.asarray(values).reshape(-1) for values in lists]
    for i, array in enumerate(arrays):
        if array.size and not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"{label(i)} must hold integer database indices, got dtype {array.dtype}")
    arrays = [array.astype(np.int64, copy=False) for array in arrays]
    flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
    if flat.size and (flat.min() < 0 or flat.max() >= num_database):
        i = next(i for i, a in enumerate(arrays) if a.size and (a.min() < 0 or a.max() >= num_database))
        bad = int(arrays[i].min() if arrays[i].min() < 0 else arrays[i].max())
        raise ValueError(f"{label(i)} holds index {bad}, outside the database [0, {num_database})")
    return arrays


class _Pairs:
    """The (query, database index) pairs of one list kind for all queries, flat and sorted by query."""

    def __init__(self, arrays: list[np.ndarray]):
        self.lengths = torch.tensor([a.size for a in arrays], dtype=torch.long)
        self.rows = torch.repeat_interleave(torch.arange(len(arrays)), self.lengths)
        self.indices = torch.from_numpy(np.concatenate(arrays)) if arrays else torch.zeros(0, dtype=torch.long)
        self.bounds = torch.cat([torch.zeros(1, dtype=torch.long), self.lengths.cumsum(0)])

    def chunk(self, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`(rows relative to start, database indices)` of queries [start, end)."""
        lo, hi = int(self.bounds[start]), int(self.bounds[end])
        return self.rows[lo:hi] - start, self.indices[lo:hi]


def _inverse_ranks(ranks: torch.Tensor, num_database: int) -> torch.Tensor:
    """`(c, num_database)`: the position of every database image in each query's ranking, -1 where not ranked."""
    inverse = torch.full((ranks.shape[0], num_database), -1, dtype=torch.long, device=ranks.device)
    positions = torch.arange(ranks.shape[1], device=ranks.device).expand_as(ranks)
    return inverse.scatter_(1, ranks, positions)


def _sorted_keys(inverse: torch.Tensor, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """`row * length + position` of the listed images that the ranking holds, each once, sorted (np.in1d's sets)."""
    rows = torch.cat([r for r, _ in pairs]).to(inverse.device)
    positions = inverse[rows, torch.cat([i for _, i in pairs]).to(inverse.device)]
    keep = positions >= 0
    return torch.unique(rows[keep] * inverse.shape[1] + positions[keep])


def _positives_without_junk(inverse, positives, junk) -> tuple[torch.Tensor, torch.Tensor]:
    """`(row, rank)` of every ranked positive, sorted, `rank` counted with the junk images removed."""
    length = inverse.shape[1]
    positive_keys = _sorted_keys(inverse, positives)
    row, rank = positive_keys // length, positive_keys % length
    junk_keys = _sorted_keys(inverse, junk) if junk else positive_keys[:0]
    if junk_keys.numel():
        # junk of the same query strictly before each positive: revisitop's `pos[ip] - k` walk (a junk image that is
        # also a positive does not shift itself, as there)
        rank = rank - (torch.searchsorted(junk_keys, positive_keys) - torch.searchsorted(junk_keys, row * length))
    return row, rank


def compute_map(ranks: torch.Tensor, positives, junk=None, kappas=DEFAULT_KAPPAS) -> RetrievalScores:
    """revisitop's `compute_map(ranks, gnd, kappas)`, vectorised over queries.

    Args:
        ranks: `(Q, M)` database indices, best first, one row per query (revisitop's `ranks` transposed). A
            ranking shorter than the database counts the positives it misses as never retrieved.
        positives: per query, the database indices of its positives (revisitop's `gnd[i]['ok']`).
        junk: per query, the indices to ignore (`gnd[i]['junk']`), or None.
        kappas: the k of mP@k.
    """
    kappas = _check_kappas(kappas)
    ranks = torch.as_tensor(ranks, dtype=torch.long)
    if ranks.dim() != 2:
        raise ValueError(f"ranks must have shape (num_queries, num_ranked), got {tuple(ranks.shape)}")
    num_queries = ranks.shape[0]
    junk = [[] for _ in range(num_queries)] if junk is None else junk
    if len(positives) != num_queries or len(junk) != num_queries:
        raise ValueError(f"ranks has {num_queries} queries but positives / junk have {len(positives)} / {len(junk)}")
    num_database = max([int(ranks.max()) + 1 if ranks.numel() else 0]
                       + [int(np.max(a)) + 1 for a in [*positives, *junk] if np.size(a)])
    positives, junk = _Pairs(_index_lists(positives, num_database, "positives")), _Pairs(_index_lists(junk, num_database, "junk"))
    inverse = _inverse_ranks(ranks, num_database)
    row, rank = _positives_without_junk(inverse, [positives.chunk(0, num_queries)], [junk.chunk(0, num_queries)])
    aps, prs = _scores_from_positions(row, rank, positives.lengths, kappas)
    return _summarise(aps, prs, kappas)


def rank_database(database: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """`(Q, N)` database indices by decreasing cosine similarity (ties in the order torch's sort leaves them, as in
    DINO's `argsort(-sim)`)."""
    similarity = F.normalize(queries.float(), dim=1) @ F.normalize(database.float(), dim=1).t()  # (Q, N)
    return similarity.argsort(dim=1, descending=True)


def _check_retrieval_features(database: torch.Tensor, queries: torch.Tensor) -> None:
    for name, value in (("database", database), ("queries", queries)):
        if not isinstance(value, torch.Tensor) or value.dim() != 2 or not value.is_floating_point():
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"{name} features must be a float tensor of shape (num_images, dim), got {shape}")
    if database.shape[1] != queries.shape[1]:
        raise ValueError(f"queries have dim {queries.shape[1]} but the database has dim {database.shape[1]}")
    if database.shape[0] == 0 or queries.shape[0] == 0:
        raise ValueError(f"empty retrieval: {database.shape[0]} database and {queries.shape[0]} query features")


def _chunks(num_queries: int, num_database: int, max_chunk_bytes: int):
    # per query and database image: similarity (4 B), ranks and inverse ranks (8 B each), the sort's scratch
    size = max(1, max_chunk_bytes // (num_database * 32))
    return [(start, min(start + size, num_queries)) for start in range(0, num_queries, size)]


def evaluate_revisited(database: torch.Tensor, queries: torch.Tensor, gnd: list[dict], kappas=DEFAULT_KAPPAS,
                       protocols=tuple(PROTOCOLS), max_chunk_bytes: int = MAX_CHUNK_BYTES) -> dict[str, RetrievalScores]:
    """`{protocol: RetrievalScores}` of the revisited Easy / Medium / Hard protocols, from one ranking.

    `gnd`: per query a dict with integer arrays "easy", "hard", "junk" (database indices), as in the ground-truth
    file. Only the listed images are looked up in the ranking (through its inverse permutation), so the cost
    beyond the floor (matmul + argsort) is one scatter of `(Q, N)` plus work on the lists.
    """
    kappas = _check_kappas(kappas)
    _check_retrieval_features(database, queries)
    num_database = database.shape[0]
    if len(gnd) != queries.shape[0]:
        raise ValueError(f"{queries.shape[0]} query features but {len(gnd)} ground-truth entries")
    lists = {name: _Pairs(_index_lists([g[name] for g in gnd], num_database, [f"gnd[{i}][{name!r}]" for i in range(len(gnd))]))
             for name in GND_LISTS}
    per_protocol = {p: ([], []) for p in protocols}
    for start, end in _chunks(queries.shape[0], num_database, max_chunk_bytes):
        inverse = _inverse_ranks(rank_database(database, queries[start:end]), num_database)  # (c, N)
        chunk = {name: pairs.chunk(start, end) for name, pairs in lists.items()}
        for protocol in protocols:
            ok, ignore = PROTOCOLS[protocol]
            row, rank = _positives_without_junk(inverse, [chunk[n] for n in ok], [chunk[n] for n in ignore])
            num_positives = sum(lists[n].lengths[start:end] for n in ok)  # revisitop's len(qgnd) of the concatenation
            aps, prs = _scores_from_positions(row, rank, num_positives.to(inverse.device), kappas)
            per_protocol[protocol][0].append(aps)
            per_protocol[protocol][1].append(prs)
    return {p: _summarise(torch.cat(a), torch.cat(b), kappas) for p, (a, b) in per_protocol.items()}


def evaluate_by_label(database: torch.Tensor, database_labels: torch.Tensor, queries: torch.Tensor,
                      query_labels: torch.Tensor, kappas=DEFAULT_KAPPAS, max_chunk_bytes: int = MAX_CHUNK_BYTES) -> RetrievalScores:
    """Scores with the database images of the query's label as positives and no junk."""
    kappas = _check_kappas(kappas)
    _check_retrieval_features(database, queries)
    database_labels = torch.as_tensor(database_labels, dtype=torch.long).to(database.device)
    query_labels = torch.as_tensor(query_labels, dtype=torch.long).to(database.device)
    if database_labels.shape != (database.shape[0],) or query_labels.shape != (queries.shape[0],):
        raise ValueError(f"labels of shapes {tuple(database_labels.shape)} / {tuple(query_labels.shape)} do not match "
                         f"{database.shape[0]} database / {queries.shape[0]} query features")
    for name, labels in (("database", database_labels), ("query", query_labels)):
        if labels.numel() and int(labels.min()) < 0:  # per_label[-1] would silently count the last class
            raise ValueError(f"{name} labels hold {int(labels.min())}: a negative label (datasets' -1 = no label) has no "
                             "class to retrieve; evaluate labelled images only")
    size = int(max(database_labels.max(), query_labels.max())) + 1
    per_label = torch.bincount(database_labels, minlength=size)
    aps, prs = [], []
    for start, end in _chunks(queries.shape[0], database.shape[0], max_chunk_bytes):
        ranks = rank_database(database, queries[start:end])  # (c, N)
        row, rank = (database_labels[ranks] == query_labels[start:end, None]).nonzero(as_tuple=True)  # row-major: sorted
        a, p = _scores_from_positions(row, rank, per_label[query_labels[start:end]], kappas)
        aps.append(a)
        prs.append(p)
    return _summarise(torch.cat(aps), torch.cat(prs), kappas)


# ------------------------------------------------------------------------------------- ground-truth files


# What a ground-truth pickle may reference: numpy's array / dtype / scalar reconstruction, and `_codecs.encode` /
# `bytes`, with which protocol-2 pickles store bytes (an array's buffer; `bytes()` for an empty one). Everything
# else (lists, dicts, tuples, numbers, strings) needs no global. Any other global -- `os.system`, `builtins.eval`,
# a class -- is refused before it is looked up, so nothing in the file runs. (`__builtin__` is Python 2's name.)
_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # protocol 5's out-of-band arrays
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),
    *((module, name) for module in ("builtins", "__builtin__") for name in ("bytes", "bytearray", "set", "frozenset")),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _SAFE_GLOBALS:
            raise _ForbiddenGlobal(f"{module}.{name}")
        if name in ("bytes", "bytearray"):
            return _sized_buffer_refused(name)
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module[len("numpy.core."):]  # numpy 2's name, without its deprecation shim
        return super().find_class(module, name)


class _ForbiddenGlobal(pickle.UnpicklingError):
    pass


def _sized_buffer_refused(name: str):
    """`bytes` / `bytearray` as pickles use them (no argument, or a string and its encoding), but not `bytes(n)`:
    n zero bytes from a few bytes of file, an allocation as large as the file asks."""
    kind = {"bytes": bytes, "bytearray": bytearray}[name]

    def build(*args):
        if args and isinstance(args[0], int):
            raise pickle.UnpicklingError(f"{name}({args[0]}) would allocate {args[0]} bytes; a pickled buffer is "
                                         "never built from a size")
        return kind(*args)

    return build


def load_gnd_pickle(path) -> dict:
    """A ground-truth pickle, through an unpickler that only builds containers, numbers, strings and numpy arrays."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            # latin1: the bytes of numpy arrays pickled by Python 2 (as numpy's own docs advise)
            return _RestrictedUnpickler(handle, encoding="latin1").load()
    except _ForbiddenGlobal as error:
        raise ValueError(
            f"refusing to load {path}: it references the global {error}, which a ground-truth file does not need "
            "(only lists, dicts, strings, numbers and numpy arrays are allowed); a pickle can run code when loaded, "
            "so this file is not read. Use a JSON ground truth instead"
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise ValueError(f"cannot read the ground-truth pickle {path}: {type(error).__name__}: {error}") from None


def _bbx(value, path, index) -> tuple[float, float, float, float] | None:
    if value is None:
        return None
    try:
        box = tuple(float(v) for v in np.asarray(value, dtype=np.float64).reshape(-1))
    except (TypeError, ValueError):
        box = ()
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        raise ValueError(f"{path}: gnd[{index}]['bbx'] must be 4 numbers (x1, y1, x2, y2), got {value!r}")
    if not (box[0] < box[2] and box[1] < box[3]):
        raise ValueError(f"{path}: gnd[{index}]['bbx'] {box} is empty: need x1 < x2 and y1 < y2")
    return box


def check_gnd(cfg, path="<gnd>") -> dict:
    """The ground truth, checked and normalised: `{"imlist": [str], "qimlist": [str], "gnd": [{"bbx": (x1, y1, x2, y2)
    or None, "easy" / "hard" / "junk": int64 arrays of database indices}]}`. Errors name the file and the key."""
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: a ground-truth file holds a dict with keys {GND_KEYS}, got {type(cfg).__name__}")
    missing = [key for key in GND_KEYS if key not in cfg]
    if missing:
        raise ValueError(f"{path}: missing key(s) {missing}; a ground-truth file has {list(GND_KEYS)} (it has {sorted(map(str, cfg))})")
    imlist, qimlist = [str(name) for name in cfg["imlist"]], [str(name) for name in cfg["qimlist"]]
    if not imlist:
        raise ValueError(f"{path}: 'imlist' is empty: no database image")
    if not qimlist:
        raise ValueError(f"{path}: 'qimlist' is empty: the query set is empty")
    entries = list(cfg["gnd"])
    if len(entries) != len(qimlist):
        raise ValueError(f"{path}: 'gnd' has {len(entries)} entries but 'qimlist' has {len(qimlist)} queries")
    gnd = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: gnd[{index}] must be a dict with keys {GND_LISTS} and 'bbx', got {type(entry).__name__}")
        absent = [key for key in GND_LISTS if key not in entry]
        if absent:
            raise ValueError(f"{path}: gnd[{index}] (query {qimlist[index]!r}) has no key(s) {absent} (it has {sorted(entry)})")
        lists = _index_lists([entry[key] for key in GND_LISTS], len(imlist), [f"{path}: gnd[{index}][{key!r}]" for key in GND_LISTS])
        gnd.append({"bbx": _bbx(entry.get("bbx"), path, index), **dict(zip(GND_LISTS, lists))})
    return {"imlist": imlist, "qimlist": qimlist, "gnd": gnd}


def load_gnd(path) -> dict:
    """`check_gnd` of a ground-truth file: a pickle (`.pkl`, `.pickle`; restricted loader) or its JSON conversion."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"ground-truth file {path} does not exist")
    if path.suffix.lower() == ".json":
        from ..cli import parse_json

        cfg = parse_json(path.read_text(encoding="utf-8"), f"ground-truth file {path}")
    elif path.suffix.lower() in (".pkl", ".pickle"):
        cfg = load_gnd_pickle(path)
    else:
        raise ValueError(f"ground-truth file {path}: expected .pkl / .pickle (revisitop's) or .json (its conversion)")
    return check_gnd(cfg, path)


def gnd_to_json(gnd: dict) -> dict:
    return {
        "imlist": gnd["imlist"],
        "qimlist": gnd["qimlist"],
        "gnd": [{"bbx": list(g["bbx"]) if g["bbx"] is not None else None, **{k: g[k].tolist() for k in GND_LISTS}}
                for g in gnd["gnd"]],
    }


def convert_gnd(source, target, overwrite: bool = False) -> Path:
    """Write the ground truth of `source` (pickle or JSON) as JSON to `target`; an existing `target` is kept
    unless `overwrite`."""
    target = Path(target)
    if target.suffix.lower() != ".json":  # load_gnd reads by suffix: anything else would be a file nothing reads
        raise ValueError(f"{target}: the JSON conversion is written to a .json file (load_gnd and --gnd_file read "
                         "ground truths by suffix); give a target ending in .json")
    if target.exists() and not overwrite:
        raise ValueError(f"{target} exists; pass --overwrite to replace it")
    gnd = load_gnd(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(gnd_to_json(gnd)) + "\n")
    return target


# -------------------------------------------------------------------------------------- revisited images


class ThumbnailTransform:
    """DINO's retrieval preprocessing: `thumbnail((size, size))` (longer side shrunk to `size`, aspect kept, never
    enlarged; Lanczos), then `ToTensor` + normalisation. `image -> pixel_values (3, H, W)`."""

    def __init__(self, size: int, mean, std):
        self.size, self.mean, self.std = int(size), tuple(mean), tuple(std)

    def __call__(self, image):
        from PIL import Image

        from ..data.images import to_rgb_image
        from ..data.transforms import to_normalized_tensor

        image = to_rgb_image(image).copy()
        image.thumbnail((self.size, self.size), Image.Resampling.LANCZOS)
        return to_normalized_tensor(image, self.mean, self.std)

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """`(width, height)` after `thumbnail`: the longer side becomes `size`, the other is PIL's choice of floor or
        ceiling, whichever keeps the aspect ratio closer (Pillow's `preserve_aspect_ratio`), at least 1."""
        if max(width, height) <= self.size:
            return width, height
        x = y = self.size
        aspect = width / height
        if x / y >= aspect:
            x = max(min(math.floor(y * aspect), math.ceil(y * aspect), key=lambda n: abs(aspect - n / y)), 1)
        else:
            y = max(min(math.floor(x / aspect), math.ceil(x / aspect), key=lambda n: 0 if n == 0 else abs(aspect - x / n)), 1)
        return x, y

    def description(self) -> dict:
        return {"name": "thumbnail", "image_size": self.size, "interpolation": "lanczos", "mean": list(self.mean),
                "std": list(self.std)}


class RevisitedImages:
    """The database or query images of a ground truth as rows `{"image": PIL image}` (queries cropped to their
    box), for `extract_split_features`."""

    def __init__(self, paths: list[str], boxes: list | None = None, split: str | None = None):
        self.paths, self.boxes, self.split = paths, boxes, split

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        from ..data.images import decode_image, to_rgb_image

        image = to_rgb_image(decode_image(self.paths[index], index, self.split))  # errors name the file
        if self.boxes is not None and self.boxes[index] is not None:
            image = image.crop(self.boxes[index])
        return {"image": image}


def resolve_images_dir(gnd_file, images_dir) -> Path:
    """`images_dir`, or its `jpg/` sub-folder when it has one (revisitop's layout `roxford5k/jpg/`); by default the
    ground-truth file's folder."""
    folder = Path(images_dir) if images_dir else Path(gnd_file).parent
    if not folder.is_dir():
        raise ValueError(f"--images_dir {folder} is not a folder")
    return folder / "jpg" if (folder / "jpg").is_dir() else folder


def _image_size(path: str) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as image:  # reads the header only
            return image.size
    except Exception as error:  # PIL raises several types for a bad file
        raise ValueError(f"cannot read the image {path}: {error}") from None


def check_revisited_images(gnd: dict, folder: Path, extension: str, transform: ThumbnailTransform, patch_size: int,
                           scales, crop_queries: bool) -> tuple[list[str], list[str], list]:
    """`(database paths, query paths, query boxes)`, after checking, before any feature is extracted, that every
    image exists and is readable, that every query box lies in its image, and that every input keeps at least one
    patch at the smallest scale."""
    database = [str(folder / f"{name}{extension}") for name in gnd["imlist"]]
    queries = [str(folder / f"{name}{extension}") for name in gnd["qimlist"]]
    missing = [p for p in dict.fromkeys(database + queries) if not os.path.isfile(p)]
    if missing:
        raise ValueError(f"{len(missing)} image(s) of the ground truth are missing, e.g. {missing[:3]}; --images_dir "
                         f"{folder} must hold <name>{extension} for every name of 'imlist' and 'qimlist'")
    sizes = {p: _image_size(p) for p in dict.fromkeys(database + queries)}
    encoded = [(path, "", sizes[path]) for path in database]  # (file, what of it, (width, height)) as encoded
    boxes = []
    for index, (path, entry) in enumerate(zip(queries, gnd["gnd"])):
        if not crop_queries:
            boxes.append(None)
            encoded.append((path, "", sizes[path]))
            continue
        if entry["bbx"] is None:
            raise ValueError(f"query {index} ({path}) has no 'bbx'; pass --crop_queries false to use whole query images")
        width, height = sizes[path]
        x1, y1, x2, y2 = entry["bbx"]
        if x1 < -BBX_TOLERANCE or y1 < -BBX_TOLERANCE or x2 > width + BBX_TOLERANCE or y2 > height + BBX_TOLERANCE:
            raise ValueError(f"query {index}: bbx {entry['bbx']} lies outside its image {path} of size {width}x{height}")
        box = (max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2))
        left, top, right, bottom = (round(v) for v in box)  # what PIL's crop does with a float box
        if right <= left or bottom <= top:
            raise ValueError(f"query {index}: bbx {entry['bbx']} of {path} is less than one pixel wide or high")
        boxes.append(box)
        encoded.append((path, f" (query {index}'s bbx crop)", (right - left, bottom - top)))
    smallest = min(scales)
    for path, what, (width, height) in encoded:
        out_w, out_h = transform.output_size(width, height)
        if min(math.floor(out_w * smallest), math.floor(out_h * smallest)) < patch_size:
            raise ValueError(f"{path}{what} is encoded at {out_w}x{out_h} pixels, which at scale {smallest:g} is smaller "
                             f"than one {patch_size}-pixel patch")
    return database, queries, boxes


def gnd_content_sha256(gnd: dict) -> str:
    """The sha256 of a checked ground truth's content (`gnd_to_json`, keys sorted): its name on the model card,
    whatever the file is called or whichever format (pickle / JSON) holds it."""
    return hashlib.sha256(json.dumps(gnd_to_json(gnd), sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------------------------- the run


def _row(split: str, protocol: str, scores: RetrievalScores, num_database: int, multi_scale: bool) -> dict:
    percent = lambda value: None if math.isnan(value) else 100.0 * value  # noqa: E731
    return {
        "method": "retrieval", "split": split, "protocol": protocol, "k": None, "shots": None, "seed": None,
        "map": percent(scores.map), "mp_at_k": {str(k): percent(v) for k, v in scores.mp.items()},
        "num_queries": int(scores.aps.numel()), "num_empty": scores.num_empty, "num_database": num_database,
        "multi_scale": multi_scale,
    }


def _warn_empty(rows: list[dict]) -> None:
    for row in rows:
        if row["num_empty"]:
            logger.warning("retrieval %s / %s: %d of %d queries have no positive in the database and are left out of "
                           "the means%s", row["split"], row["protocol"], row["num_empty"], row["num_queries"],
                           " (mAP undefined: every query is empty)" if row["map"] is None else "")


def _scales(retrieval_args) -> tuple[float, ...]:
    return MULTI_SCALES if retrieval_args.multi_scale else (1.0,)


def _run_revisited(model_args, data_args, run_args, retrieval_args, accelerator) -> dict:
    from ..data.arguments import has_data_flags
    from .feature_cache import cache_key, checkpoint_fingerprint, sha256_file
    from ..model_source import load_encoder
    from .runner import cached_features_of_all_processes, extract_split_features
    from .session import write_results_and_card

    if has_data_flags(data_args):
        raise ValueError("--gnd_file evaluates the revisited Oxford / Paris layout; it cannot be combined with "
                         "--dataset_name / --train_dir / --validation_dir / --synthetic_* (the labelled-dataset input)")
    gnd_file = Path(retrieval_args.gnd_file)
    gnd = load_gnd(gnd_file)
    folder = resolve_images_dir(gnd_file, retrieval_args.images_dir)
    model, info = load_encoder(model_args.model_name_or_path, model_args.cache_dir, model_args.model_revision)
    image_size = retrieval_args.image_size or info.image_size
    scales = _scales(retrieval_args)
    transform = ThumbnailTransform(image_size, info.image_mean, info.image_std)
    database_paths, query_paths, boxes = check_revisited_images(
        gnd, folder, retrieval_args.image_extension, transform, info.patch_size, scales, retrieval_args.crop_queries)
    model.to(accelerator.device)
    dataset_label = retrieval_args.dataset_label or gnd_file.stem.removeprefix("gnd_")
    content = gnd_content_sha256(gnd)  # the file's name may be shared by other ground truths: its content is not
    described = {"gnd_file": str(gnd_file.resolve()), "gnd_sha256": sha256_file(gnd_file), "images_dir": str(folder.resolve()),
                 "image_extension": retrieval_args.image_extension}
    cache_hits = {}

    def features(split: str, images: RevisitedImages) -> torch.Tensor:
        key = cache_key(checkpoint_fingerprint(info.model_name_or_path, info.commit_hash),
                        {**described, "crop_queries": retrieval_args.crop_queries if split == "query" else None},
                        split, transform.description(), model_args.pooling)
        key["scales"] = list(scales)
        labels = torch.arange(len(images))

        def compute():
            # one image per forward pass: the images differ in size, as in DINO (which loads them with batch size 1)
            return extract_split_features(
                model, images, "image", transform, pooling=model_args.pooling, batch_size=1,
                num_workers=run_args.num_workers, accelerator=accelerator,
                progress=run_args.progress and accelerator.is_main_process, split=split, scales=scales,
            ), labels

        result, _, hit = cached_features_of_all_processes(run_args.feature_cache_dir, key, compute, run_args.overwrite_cache,
                                                          accelerator)
        cache_hits[split] = hit
        return result

    database = features("database", RevisitedImages(database_paths, split="database"))
    queries = features("query", RevisitedImages(query_paths, boxes, split="query"))
    payload = {
        "schema_version": 1, "checkpoint": info.model_name_or_path, "dataset": dataset_label, "input": "revisited",
        "gnd_file": str(gnd_file), "gnd_content_sha256": content, "images_dir": str(folder),
        "crop_queries": retrieval_args.crop_queries,
        "image_size": image_size, "train_split": None, "pooling": model_args.pooling,
        "multi_scale": retrieval_args.multi_scale, "scales": list(scales), "kappas": list(retrieval_args.kappas),
        "num_database": len(database_paths), "num_processes": accelerator.num_processes, "results": [],
    }
    if not accelerator.is_main_process:
        return {**payload, "cache_hits": cache_hits}
    scores = evaluate_revisited(database.to(accelerator.device), queries.to(accelerator.device), gnd["gnd"], retrieval_args.kappas)
    payload["results"] = [{**_row("query", p, s, len(database_paths), retrieval_args.multi_scale),
                           "crop_queries": retrieval_args.crop_queries, "image_size": image_size,
                           "image_size_is_default": image_size == info.image_size, "gnd_content_sha256": content}
                          for p, s in scores.items()]
    _warn_empty(payload["results"])
    payload = write_results_and_card(payload, RESULTS_FILE, model_args, run_args, dataset_label)
    payload["cache_hits"] = cache_hits
    return payload


def _run_labelled(model_args, data_args, run_args, retrieval_args, dataset, accelerator) -> dict:
    from .session import EvaluationData, EvaluationSession

    # a query class the database lacks is a query without positive (counted as "empty"), not an error
    data = EvaluationData(data_args, model_args.model_name_or_path, model_args.cache_dir, dataset, new_classes="append")
    for split in data.splits:  # before the encoder is loaded (EvaluationData refused labels outside the classes)
        if len(data.dataset[split]) == 0:
            role = "database" if split == data.train_split else "query"
            raise ValueError(f"split {split!r} is empty: the {role} set of the retrieval has no image")
    # single scale: the k-NN features (same cache entries); multi-scale: DINO's average, L2-normalised
    scales = MULTI_SCALES if retrieval_args.multi_scale else None
    setup = EvaluationSession(data, model_args, run_args, accelerator)
    database, database_labels = setup.features(data.train_split, scales)
    database = database.to(setup.accelerator.device)
    rows = []
    for split in data.eval_splits:
        queries, query_labels = setup.features(split, scales)
        if not setup.is_main:
            continue
        scores = evaluate_by_label(database, database_labels, queries.to(database.device), query_labels, retrieval_args.kappas)
        rows.append(_row(split, "same_label", scores, database.shape[0], retrieval_args.multi_scale))
    if setup.is_main:
        _warn_empty(rows)
    return setup.finish(
        rows, RESULTS_FILE, input="labels", multi_scale=retrieval_args.multi_scale,
        scales=list(_scales(retrieval_args)), kappas=list(retrieval_args.kappas), num_database=int(database.shape[0]),
    )


def run_retrieval(model_args, data_args, run_args, retrieval_args, dataset=None, accelerator=None) -> dict:
    """Retrieval mAP / mP@k of a frozen encoder; returns the results payload (schema in the
    module docstring).

    With `retrieval_args.gnd_file`: the revisited Oxford / Paris layout, Easy / Medium / Hard. Without: the
    labelled dataset of `data_args` (or `dataset`), the train split as database, every eval split as queries.
    """
    from accelerate import Accelerator

    # model_args.pooling was checked by EvalModelArguments (the boundary); extract_features checks its own callers
    accelerator = accelerator or Accelerator()
    if retrieval_args.gnd_file:
        if dataset is not None:
            raise ValueError("pass either a dataset or retrieval_args.gnd_file, not both")
        return _run_revisited(model_args, data_args, run_args, retrieval_args, accelerator)
    return _run_labelled(model_args, data_args, run_args, retrieval_args, dataset, accelerator)


def format_retrieval_table(payload: dict) -> str:
    kappas = [str(k) for k in payload.get("kappas", DEFAULT_KAPPAS)]
    lines = [f"{'split':<22}{'protocol':<12}{'mAP':>8}" + "".join(f"{'mP@' + k:>8}" for k in kappas) + f"{'queries':>9}{'empty':>7}"]
    show = lambda value: "-" if value is None else f"{value:.2f}"  # noqa: E731
    for row in payload["results"]:
        lines.append(f"{row['split']:<22}{row['protocol']:<12}{show(row['map']):>8}"
                     + "".join(f"{show(row['mp_at_k'][k]):>8}" for k in kappas)
                     + f"{row['num_queries']:>9}{row['num_empty']:>7}")
    return "\n".join(lines)


def print_retrieval_summary(payload: dict) -> None:
    """The table and where things went; prints only on the main process (which has `results_file`)."""
    from ..cli import print_summary

    print_summary(payload, format_retrieval_table)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m modeling_attg_mae.evaluation.retrieval")
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert-gnd", help="Write a ground-truth pickle (restricted loader) as JSON.")
    convert.add_argument("source", help="gnd_roxford5k.pkl / gnd_rparis6k.pkl (or a JSON ground truth)")
    convert.add_argument("target", help="the JSON file to write")
    convert.add_argument("--overwrite", action="store_true", help="replace an existing target")
    args = parser.parse_args(argv)
    target = convert_gnd(args.source, args.target, overwrite=args.overwrite)
    gnd = load_gnd(target)
    print(f"wrote {target}: {len(gnd['imlist'])} database images, {len(gnd['qimlist'])} queries")


__all__ = [
    "DEFAULT_KAPPAS", "PROTOCOLS", "RetrievalScores", "compute_map", "rank_database", "evaluate_revisited",
    "evaluate_by_label", "load_gnd", "load_gnd_pickle", "check_gnd", "convert_gnd", "gnd_content_sha256",
    "run_retrieval",
    "format_retrieval_table", "print_retrieval_summary",
]


if __name__ == "__main__":
    main()
