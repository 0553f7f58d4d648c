"""The config schema (config/schema.yaml) and the checks of a train section: what an SFT
run needs of the config, apart from the workflow-wide checks of ``config.py`` (which import
every evaluator); an SFT job depends on this module, not on those."""
from __future__ import annotations

import copy
import functools
from pathlib import Path

import jsonschema


def _path(parts) -> str:
    return ".".join(str(p) for p in parts) or "<top level>"


def schema_errors(config: dict, schema: dict) -> list[str]:
    """Every schema violation as 'config key <path>: <what is wrong>'."""
    validator = jsonschema.Draft202012Validator(schema)
    out = []
    for err in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path))):
        path = list(err.absolute_path)
        if err.validator == "additionalProperties":
            allowed = sorted(err.schema.get("properties", {}))
            extra = sorted(set(err.instance) - set(allowed))
            for key in extra:
                out.append(f"config key {_path(path + [key])}: unknown key"
                           + (f" (allowed here: {', '.join(allowed)})" if allowed else ""))
        else:
            out.append(f"config key {_path(path)}: {err.message}")
    return out



SCHEMA_FILE = Path(__file__).resolve().parent.parent / "config" / "schema.yaml"


@functools.lru_cache(maxsize=1)
def schema() -> dict:
    """config/schema.yaml: the one source of the config's keys and defaults."""
    import yaml
    if not SCHEMA_FILE.is_file():
        raise FileNotFoundError(f"{SCHEMA_FILE}: the config schema is missing (ordermerge reads "
                                f"it from its source tree; install with pip install -e .)")
    # libyaml's loader where PyYAML has it: the same data, a seventh of the time (0.04 s of
    # every Snakemake start, SLURM jobs' included)
    return yaml.load(SCHEMA_FILE.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def train_defaults() -> dict:
    """The train section's keys and their defaults, from the schema ($defs/train)."""
    import copy
    return copy.deepcopy({k: v.get("default") for k, v in schema()["$defs"]["train"]["properties"].items()})


def train_errors(tr: dict, key: str) -> list[str]:
    """Rules across a train section's keys (also checked by `ordermerge train`)."""
    out = []
    if tr.get("micro_batch_size", 0) > tr.get("batch_size", float("inf")):
        out.append(f"config key {key}.micro_batch_size: {tr['micro_batch_size']} "
                   f"exceeds batch_size {tr['batch_size']}")
    if tr.get("micro_batch_tokens") is not None and tr["micro_batch_tokens"] < tr.get("max_length", 0):
        out.append(f"config key {key}.micro_batch_tokens: {tr['micro_batch_tokens']} is less "
                   f"than max_length {tr['max_length']} (a row of max_length tokens must fit)")
    return out


def fill_defaults(config: dict, schema: dict) -> None:
    """Set the schema's defaults in `config` where a key is missing, as Snakemake's
    ``validate(config, schema, set_default=True)`` does (the jsonschema recipe: every
    ``properties`` keyword visited fills its defaults first), and raise the first violation."""
    from jsonschema import validators

    base = jsonschema.Draft202012Validator
    check_properties = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, sub):
        for key, subschema in properties.items() if isinstance(instance, dict) else ():
            if "default" in subschema and key not in instance:
                # a copy: the config's object is filled in (and may be changed) later, and the
                # schema is cached for the process (the next config would see it changed)
                instance[key] = copy.deepcopy(subschema["default"])
        yield from check_properties(validator, properties, instance, sub)

    validators.extend(base, {"properties": set_defaults})(schema).validate(config)
