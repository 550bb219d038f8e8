"""The extraction driver: a data source -> the embedding dataset format (`embaug extract`).

    embaug extract --config=configs/extract/wordnet_minilm.py --workdir=workdirs/wordnet

Each item's text fields are embedded with one BERT (`config.text_model`) and its image fields
with one EfficientNet (`config.image_model`); the parts are concatenated, text fields first, and
named in the dataset's `segments` (e.g. title 1536 | description 1536 | image 1792). The models
are built, fingerprinted and run by `embed.extraction`; this module runs the sources, embed and
dataset stages around them in one workdir.

Work is done in shards of `config.shard_size` items, each written atomically to
`workdir/shards/shard_00000.npy`, so a run killed at any point and started again redoes no
finished shard (and embeds a damaged one again); the assembled dataset is byte-identical to
that of an uninterrupted run. The output (`workdir/embeddings`, or `config.output`) is written
atomically too; the shards are removed after assembly unless `config.keep_shards`.

A fingerprint -- sha256 over the embedders' own fingerprints (weights, tokenizer, pooling), their
settings, the source's contents (ids, labels, texts, image bytes) and every config knob that
changes the output -- is stored in `shards/manifest.json` and in the dataset's `info`. A finished
output with the same fingerprint is reused ("cached, skipping"); a different one, or shards of a
different run, are never reused silently: that is an error naming the parts that differ, until
`--config.overwrite=True` (which clears them) or another workdir.

Workdir layout:

    <workdir>/embeddings/            the dataset (config.output overrides the place)
    <workdir>/skipped_images.json    beside the dataset, only when items were skipped
    <workdir>/shards/                manifest.json + shard_*.npy while a run is unfinished
    <workdir>/models/                image checkpoints converted to safetensors (kept, reused)

Images are checked before any embedding: every missing, unreadable or corrupt file is listed in
one error, or, with `config.skip_bad_images=True`, those items are left out and listed in
`skipped_images.json` next to the output.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import jax
import numpy as np
from absl import logging

from embaug_jax import compiles, distributed
from embaug_jax import sources as sources_lib
from embaug_jax.dataset import Segment, is_saved_dataset, load_embeddings, save_embeddings
from embaug_jax.embed.extraction import (build_image_embedder, build_text_embedder,
                                         config_devices, embed_shard, model_fingerprint)
from embaug_jax.embed.images import decode_image
from embaug_jax.util import (DamagedOutput, UserError, atomic_path, check_input, check_workdir,
                             read_json, reuse_freed_memory, workdir_lock, write_json_atomic)
from embaug_jax.workdir import Workdir

# Bumped when the pipeline changes what it writes for the same inputs.
PIPELINE_VERSION = 1
MANIFEST = "manifest.json"
# Keys of config.source that say where data lives, not what it is: the content hash covers the
# data itself, so moving a data set does not invalidate its embeddings.
_LOCATION_KEYS = ("path", "root", "data_dir")
_CONFIG_LOCATIONS = (*(f"source.{k}" for k in _LOCATION_KEYS), "text_model.path",
                     "image_model.path", "output")


def _cfg_dict(cfg: Any) -> dict[str, Any]:
    if cfg is None:
        return {}
    if hasattr(cfg, "to_dict"):
        return cfg.to_dict()
    return dict(cfg)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def select_fields(data: sources_lib.SourceData, fields: Any) -> tuple[list[str], list[str]]:
    """(text fields, image fields) to embed: `fields` in the config's order, text fields first."""
    names = sources_lib.split_names(fields) or data.fields
    unknown = [f for f in names if f not in data.texts and f not in data.images]
    if unknown:
        raise UserError(f"config.fields names {unknown}, which the source does not have; "
                        f"its fields are {data.fields}.")
    if len(set(names)) != len(names):
        raise UserError(f"config.fields repeats a field: {names}.")
    return [f for f in names if f in data.texts], [f for f in names if f in data.images]


def content_hash(data: sources_lib.SourceData, text_fields: Sequence[str],
                 image_fields: Sequence[str], *, progress: bool = True) -> str:
    """sha256 over what the output depends on: ids, labels, classes, texts and image bytes.

    Each part is hashed as its JSON (`json.dumps(..., ensure_ascii=False)`), written a chunk of
    items at a time, so a table's texts are read as they stream (one pass per field) and never
    held whole. A missing, unreadable or not regular image file hashes as such, so fixing it
    changes the hash.
    """
    from tqdm.auto import tqdm

    h = hashlib.sha256()

    def dump(obj: Any) -> bytes:
        return json.dumps(obj, ensure_ascii=False).encode("utf-8")

    def put(obj: Any) -> None:
        h.update(dump(obj))
        h.update(b"\0")

    def put_list(values: Iterable[Any], prefix: bytes = b"", suffix: bytes = b"") -> None:
        """`put(list(values))` with `prefix` after its "[" and `suffix` before its "]" (for a
        list nested in a list), without the whole list in memory."""
        h.update(b"[" + prefix)
        first = True
        for chunk in _chunks(values, _HASH_CHUNK):
            h.update((b"" if first else b", ") + b", ".join(dump(v) for v in chunk))
            first = False
        h.update(suffix + b"]")
        h.update(b"\0")

    put(data.class_names)
    put_list(_id_chunks(data))
    names = np.asarray(data.class_names, dtype=str)
    put_list(names[data.label_ids[i:i + _HASH_CHUNK]].tolist()
             for i in range(0, len(data), _HASH_CHUNK))
    for name in text_fields:
        # json.dumps([name, texts]): '["name", [...]]'
        h.update(b"[" + dump(name) + b", ")
        put_list([data.texts[name]], suffix=b"]")
    for name in image_fields:
        put(name)
        field = data.images[name]
        if field.paths is not None:
            for p in tqdm(field.paths, desc=f"hash images '{name}'", unit="img",
                          disable=not progress, leave=False):
                h.update(_file_digest(p) if p else b"none")
        else:
            for start in range(0, len(field), 4096):
                h.update(np.ascontiguousarray(
                    field.loader(np.arange(start, min(start + 4096, len(field))))).tobytes())
    return h.hexdigest()


# Items a content hash encodes at a time.
_HASH_CHUNK = 4096


def _id_chunks(data) -> Iterable[list[str]]:
    """The items' ids as lists of Python strings, _HASH_CHUNK at a time (never all at once)."""
    return (data.ids[i:i + _HASH_CHUNK].tolist() for i in range(0, len(data), _HASH_CHUNK))


def _chunks(parts: Iterable[Any], size: int):
    """Lists of up to `size` values from `parts`, an iterable of lists (or of one iterable)."""
    chunk: list = []
    for part in parts:
        for value in part:
            chunk.append(value)
            if len(chunk) == size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def _file_digest(path: str) -> bytes:
    """sha256 of an image file's bytes, or what kept it from being read; nothing that is not a
    regular file is opened (a named pipe would wait for a writer forever)."""
    try:
        check_input(path, "an image")
        return hashlib.sha256(Path(path).read_bytes()).digest()
    except OSError as e:
        return f"unreadable:{type(e).__name__}".encode()
    except UserError:
        return b"unreadable:not a regular file"


def find_bad_images(data: sources_lib.SourceData, image_fields: Sequence[str], *,
                    progress: bool = True) -> dict[str, str]:
    """{item id: why} for every item whose image file is missing, unreadable, undecodable or
    not a regular file."""
    from tqdm.auto import tqdm

    bad: dict[str, str] = {}
    for name in image_fields:
        field = data.images[name]
        if field.paths is None:
            continue  # in-memory arrays: validated when the source built them
        ids = (item_id for chunk in _id_chunks(data) for item_id in chunk)
        for item_id, p in tqdm(zip(ids, field.paths), total=len(field),
                               desc=f"check images '{name}'", unit="img", disable=not progress,
                               leave=False):
            if not p:
                reason = "no image path given"
            else:
                try:
                    check_input(p, "an image", missing=f"missing file {p}")
                    decode_image(p)
                    continue
                except FileNotFoundError as e:
                    reason = str(e)
                except ValueError as e:  # not a regular file; BadImageError, which names it
                    reason = str(e)
            bad.setdefault(item_id, f"{name}: {reason}")
    return bad


def _fingerprint(parts: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(_jsonable(parts), sort_keys=True).encode()).hexdigest()


def _differences(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[str]:
    if not old:
        return ["(no recorded parts)"]
    return sorted(k for k in set(old) | set(new) if _jsonable(old.get(k)) != _jsonable(new.get(k)))


def _stale_error(what: str, where: Path, old_parts, new_parts) -> UserError:
    return UserError(
        f"{what} at {where} was made from different inputs (differs in: "
        f"{', '.join(_differences(old_parts, new_parts))}); it is not reused. Pass "
        "--config.overwrite=True to replace it, or use another --workdir / --config.output.")


def _overwritten(output: Path, workdir: Path) -> list[Path]:
    """What `overwrite=True` removes: the earlier outputs present, each checked to be one the
    extraction wrote (a UserError, naming it, for anything else)."""
    stale = []
    for path, ours in ((output, is_saved_dataset), (Workdir(workdir).shards, _is_shards_dir),
                       (Workdir(workdir).skipped_images(output), _is_skipped_report)):
        if path.exists() or path.is_symlink():
            if not ours(path):
                raise UserError(
                    f"--config.overwrite=True would remove {path}, which embaug_jax did not "
                    "write; it is left untouched. Point --config.output (or --workdir) "
                    "elsewhere, or move it away first.")
            stale.append(path)
    return stale


def _is_shards_dir(path: Path) -> bool:
    """Whether `path` holds only what the extraction writes there: shards, their manifest and
    the temporaries of an interrupted write."""
    if not path.is_dir() or path.is_symlink():
        return False
    return all(p.name == MANIFEST or (p.name.startswith("shard_") and p.suffix == ".npy")
               or (p.name.startswith(".") and p.name.endswith(".tmp")) for p in path.iterdir())


def _is_skipped_report(path: Path) -> bool:
    """Whether `path` is the skipped-images report an extraction wrote."""
    if not path.is_file() or path.is_symlink():
        return False
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(report, dict) and set(report) == {"count", "items"}


def _clear(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _read_output_info(output: Path) -> dict[str, Any] | None:
    """The `info` of an existing output, None if there is none; an unreadable one is an error."""
    if not output.exists():
        return None
    try:
        return load_embeddings(output, mmap=True, validate=False).info
    except (ValueError, OSError, KeyError) as e:
        raise UserError(f"{output} exists but is not a readable embedding dataset ({e}). Pass "
                        "--config.overwrite=True to replace it, or choose another output."
                        ) from e


def fingerprint_parts(config: Any, data: sources_lib.SourceData, text_fields: Sequence[str],
                      image_fields: Sequence[str], text_embedder, image_embedder) -> dict:
    """Everything the output depends on, as JSON: its sha256 is the run's fingerprint.

    Data locations (source paths, model paths) and devices are left out: the content hash and
    the embedders' fingerprints cover what they point at, so a moved data set or model folder
    does not invalidate its embeddings.
    """

    def model(embedder, section: str, used: bool):
        return model_fingerprint(embedder, _cfg_dict(config[section])) if used else None

    return _jsonable({
        "pipeline_version": PIPELINE_VERSION,
        "source": {k: v for k, v in _cfg_dict(config.source).items() if k not in _LOCATION_KEYS},
        "source_content": content_hash(data, text_fields, image_fields,
                                       progress=bool(config.progress)),
        "text_fields": list(text_fields),
        "image_fields": list(image_fields),
        "text_model": model(text_embedder, "text_model", bool(text_fields)),
        "image_model": model(image_embedder, "image_model", bool(image_fields)),
        "shard_size": int(config.shard_size),
        "skip_bad_images": bool(config.skip_bad_images),
    })


def _device_counts(text_embedder, image_embedder) -> dict[str, int]:
    """Devices each embedder shards a batch over (0: none used, or not known)."""
    return {name: len(getattr(e, "devices", None) or ()) for name, e in
            (("text", text_embedder), ("image", image_embedder)) if e is not None}


def _check_shards(shards_dir: Path, fingerprint: str, parts: Mapping[str, Any],
                  devices: Mapping[str, int], *, clean: bool = True) -> None:
    """Errors on shards of other inputs or a damaged manifest; redoes those of another device
    count, and damaged ones (truncated, overwritten); drops the temporaries of a run killed
    mid-write (if `clean`: one process does that)."""
    if not shards_dir.exists():
        return
    manifest_path = shards_dir / MANIFEST
    manifest = {}
    if manifest_path.is_file():
        try:
            manifest = read_json(manifest_path)
        except (OSError, ValueError):
            manifest = None
        if not isinstance(manifest, dict):
            raise DamagedOutput(
                f"{manifest_path} is damaged (not the JSON object an extraction writes), so the "
                f"unfinished shards in {shards_dir} cannot be matched to this run's inputs. Pass "
                "--config.overwrite=True to redo them, or delete that folder.")
    if manifest.get("fingerprint") != fingerprint:
        raise _stale_error("Unfinished shards", shards_dir, manifest.get("fingerprint_parts"),
                           parts)
    # Vectors differ in the last bits across device counts (XLA picks kernels by the per-device
    # batch), so a dataset's shards all come from one count: the others are redone.
    before = manifest.get("devices")
    if before is not None and before != dict(devices):
        if clean:
            logging.warning("extract: the unfinished shards in %s were embedded on %s device(s), "
                            "this run uses %s; embeddings differ in the last bits across device "
                            "counts, so they are redone.", shards_dir, before, dict(devices))
            _clear(shards_dir)
        return
    for tmp in shards_dir.glob(".*.tmp") if clean else ():
        _clear(tmp)
    items, size, dim = (manifest.get(k) for k in ("items", "shard_size", "dim"))
    if clean and all(isinstance(v, int) for v in (items, size, dim)):
        for i, path in enumerate(_shard_paths(shards_dir, items, size)):
            problem = _shard_problem(path, min(size, items - i * size), dim)
            if problem:
                logging.warning("extract: %s %s; it is embedded again.", path, problem)
                path.unlink()


def _shard_problem(path: Path, rows: int, dim: int) -> str | None:
    """Why a finished shard cannot be assembled (truncated, overwritten, of another shape),
    read from its header and size alone; None if it is intact or absent."""
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                return f"is in .npy format version {version}, which np.save does not write here"
            shape, fortran, dtype = read_header(f)
            offset = f.tell()
    except (OSError, ValueError, EOFError) as e:
        return f"is damaged ({e})"
    if shape != (rows, dim) or dtype != np.float32 or fortran:
        return f"holds a {dtype} array of shape {shape}, not float32 {(rows, dim)}"
    if path.stat().st_size != offset + rows * dim * 4:
        return f"is truncated ({path.stat().st_size} bytes, not {offset + rows * dim * 4})"
    return None


def _shard_paths(shards_dir: Path, num_items: int, shard_size: int) -> list[Path]:
    return [shards_dir / f"shard_{i:05d}.npy" for i in range(-(-num_items // shard_size))]


def _embed_shards(data, keep: np.ndarray | range, shards_dir: Path, shard_size: int,
                  text_fields, image_fields, text_embedder, image_embedder, dim: int,
                  progress: bool, todo: Sequence[int] | None = None) -> list[Path]:
    """Embeds the unfinished shards of the items `keep` (indices of `data`, an array or a
    range; only the shards numbered in `todo`, if given); returns all shard paths in order."""
    from tqdm.auto import tqdm

    starts = range(0, len(keep), shard_size)
    paths = _shard_paths(shards_dir, len(keep), shard_size)
    todo = range(len(paths)) if todo is None else set(todo)
    done = sum(min(shard_size, len(keep) - s) for s, p in zip(starts, paths) if p.is_file())
    if done:
        logging.info("extract: resuming, %d of %d items already embedded.", done, len(keep))
    # Counted in embeddings (items x fields) of this process's shards, advanced per embedder
    # batch, so items/s and the ETA show within seconds of the start, not after a shard.
    fields = len(text_fields) + len(image_fields)
    sizes = [min(shard_size, len(keep) - s) for s in starts]
    mine = sum(sizes[i] for i in range(len(paths)) if i in todo)
    mine_done = sum(sizes[i] for i in range(len(paths)) if i in todo and paths[i].is_file())
    with tqdm(total=mine * fields, initial=mine_done * fields, unit="emb", disable=not progress,
              desc=f"extract ({fields} field{'s' if fields > 1 else ''} per item)") as bar:
        for i, (start, path) in enumerate(zip(starts, paths)):
            if path.is_file() or i not in todo:
                continue
            rows = np.asarray(keep[start:start + shard_size], np.int64)
            shard = embed_shard(data, rows, text_fields, image_fields, text_embedder,
                                 image_embedder, dim, bar)
            with atomic_path(path, replace=True) as tmp:
                np.save(tmp, shard)
    return paths


def run_extraction(config: Any, workdir: str | os.PathLike, *, text_embedder=None,
                   image_embedder=None) -> Path:
    """Embeds `config.source` into an embedding dataset; returns the dataset's path.

    Args:
      config: an extract config (see configs/extract/*.py for every knob).
      workdir: folder for the shards and (by default) the output `embeddings/`.
      text_embedder / image_embedder: ready-made embedders (anything with `.dim`,
        `.embed(items)` and `.fingerprint()`), used instead of building them from
        `config.text_model` / `config.image_model` (for notebooks and tests).
    """
    # First, before JAX starts its CPU backend: batches then reuse memory instead of faulting
    # fresh pages in (see util.reuse_freed_memory).
    reuse_freed_memory()
    # Under --distributed every process runs this command, and each must run the same one
    # (where the data and models live may differ by host).
    distributed.check_same("config", _cfg_dict(config), ignore=_CONFIG_LOCATIONS)
    workdir = Path(workdir)
    output = Path(config.output or Workdir(workdir).embeddings)
    shard_size = int(config.shard_size)
    if shard_size < 1:
        raise UserError(f"config.shard_size must be >= 1, got {shard_size}.")
    check_workdir(workdir)
    if output.exists() and output.suffix != ".npz" and not output.is_dir():
        raise UserError(f"the output {output} exists and is a file, not a dataset folder; "
                        "remove it or set --config.output to another path (ending in .npz for "
                        "one file).")
    if config.overwrite:
        _overwritten(output, workdir)  # refused at once, before any model is loaded
    # Only process 0 of a multi-process run writes, so only it holds the workdir.
    with workdir_lock(workdir, "extract", take=distributed.is_primary()), compiles.clock() as clock:
        return _run_extraction(config, workdir, output, shard_size, text_embedder,
                               image_embedder, clock)


def _run_extraction(config: Any, workdir: Path, output: Path, shard_size: int, text_embedder,
                    image_embedder, clock: Mapping[str, float]) -> Path:
    skipped_path = Workdir(workdir).skipped_images(output)
    shards_dir = Workdir(workdir).shards
    keep_shards = bool(config.keep_shards)

    data = sources_lib.load_source(config)
    text_fields, image_fields = select_fields(data, config.fields)
    logging.info("extract: %d items, %d classes from %s; dropped %s; notes %s", len(data),
                 len(data.class_names), data.info.get("kind"), data.dropped or "nothing",
                 data.notes or "none")
    if (text_fields and text_embedder is None) or (image_fields and image_embedder is None):
        devices = config_devices(config)
        if text_fields and text_embedder is None:
            text_embedder = build_text_embedder(config.text_model, devices)
        if image_fields and image_embedder is None:
            image_embedder = build_image_embedder(config.image_model, devices, workdir)

    parts = fingerprint_parts(config, data, text_fields, image_fields, text_embedder,
                              image_embedder)
    distributed.check_same("extraction inputs", parts)
    fingerprint = _fingerprint(parts)
    # Under --distributed every process runs this function on the shared workdir: process 0
    # alone clears, writes the manifest and assembles; the shards are shared out between all.
    primary = distributed.is_primary()
    started = time.monotonic()

    def wait_for_all(stage: str) -> None:
        distributed.barrier(f"extract {fingerprint[:16]} {stage}",
                            distributed.patient_timeout(started))

    if config.overwrite and primary:
        for stale in _overwritten(output, workdir):
            logging.info("extract: overwrite=True, removing %s", stale)
            _clear(stale)
    wait_for_all("cleared")
    info = _read_output_info(output)
    if info is not None:
        if info.get("fingerprint") != fingerprint:
            raise _stale_error("An embedding dataset", output, info.get("fingerprint_parts"),
                               parts)
        logging.info("extract: %s is up to date (fingerprint %s): cached, skipping.", output,
                     fingerprint[:12])
        if shards_dir.exists() and not keep_shards and primary:
            shutil.rmtree(shards_dir)
        return output
    devices = _device_counts(text_embedder if text_fields else None,
                             image_embedder if image_fields else None)
    _check_shards(shards_dir, fingerprint, parts, devices, clean=primary)
    wait_for_all("checked")

    progress = bool(config.progress)
    bad = find_bad_images(data, image_fields, progress=progress)
    if bad and not config.skip_bad_images:
        listing = "\n".join(f"  {item_id}: {why}" for item_id, why in sorted(bad.items()))
        raise UserError(f"{len(bad)} item(s) have a missing, unreadable or corrupt image:\n"
                        f"{listing}\nFix or remove them, or pass "
                        "--config.skip_bad_images=True to leave those items out.")
    # The items to embed: all of them as a range, no array of a million numbers, unless some
    # are left out.
    keep = np.flatnonzero(~np.isin(data.ids, list(bad))) if bad else range(len(data))
    if len(keep) == 0:
        raise UserError("Every item has a bad image; nothing to embed.")
    if bad:
        logging.warning("extract: leaving out %d item(s) with bad images (listed in %s).",
                        len(bad), skipped_path)

    segments = ([Segment(f, int(text_embedder.dim)) for f in text_fields]
                + [Segment(f, int(image_embedder.dim)) for f in image_fields])
    dim = sum(s.size for s in segments)
    if not (shards_dir / MANIFEST).is_file() and primary:
        write_json_atomic(shards_dir / MANIFEST, {
            "fingerprint": fingerprint, "fingerprint_parts": parts, "items": int(len(keep)),
            "shard_size": shard_size, "dim": dim, "devices": devices})
    # Every process lists the unfinished shards before any is written, then takes every P-th:
    # the work is shared out on any process count, and a resumed run redoes no finished shard.
    unfinished = [i for i, p in enumerate(_shard_paths(shards_dir, len(keep), shard_size))
                  if not p.is_file()]
    wait_for_all("listed")
    todo = unfinished[jax.process_index()::jax.process_count()]
    if jax.process_count() > 1:
        logging.info("extract: process %d of %d embeds shards %s (%d unfinished of %d).",
                     jax.process_index(), jax.process_count(), todo, len(unfinished),
                     len(_shard_paths(shards_dir, len(keep), shard_size)))
    shard_paths = _embed_shards(data, keep, shards_dir, shard_size, text_fields, image_fields,
                                text_embedder, image_embedder, dim, progress, todo=todo)
    wait_for_all("embedded")
    if not primary:
        logging.info("extract: process %d embedded its shards; %s.", jax.process_index(),
                     compiles.summary(clock))
        wait_for_all("assembled")
        return output

    # Assembly: the report first, then the dataset (atomically): a run killed in between
    # redoes only the assembly. The shards are streamed into the output one at a time, so
    # memory stays bounded by the shard size however many items there are.
    shapes = [np.load(p, mmap_mode="r").shape for p in shard_paths]  # headers only
    rows = sum(s[0] for s in shapes)
    widths = sorted({s[1] if len(s) == 2 else -1 for s in shapes})
    if rows != len(keep) or widths != [dim]:
        raise UserError(f"Shards in {shards_dir} hold {rows} rows of width(s) {widths}, expected "
                        f"{len(keep)} x {dim}; pass --config.overwrite=True to redo them.")
    if bad:
        write_json_atomic(skipped_path, {"count": len(bad), "items": dict(sorted(bad.items()))})
    elif _is_skipped_report(skipped_path):
        skipped_path.unlink()
    kept = data.subset(keep) if bad else data
    # A class left without items would be an empty row of every per-class metric.
    kept.drop_empty_classes()
    info = {"fingerprint": fingerprint, "fingerprint_parts": parts,
            "source": _jsonable(data.info), "dropped": data.dropped, "notes": data.notes,
            "skipped_images": len(bad), "text_model": parts["text_model"],
            "image_model": parts["image_model"]}
    save_embeddings(output, shard_paths, kept.label_ids.astype(np.int64), kept.class_names,
                    ids=kept.ids, segments=segments, info=info)
    logging.info("extract: wrote %s: %d items x %d (%s) in %s.", output, len(keep), dim,
                 " | ".join(f"{s.name} {s.size}" for s in segments), compiles.summary(clock))
    if not keep_shards:
        shutil.rmtree(shards_dir)
    wait_for_all("assembled")
    return output
