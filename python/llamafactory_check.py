"""Feeds configs written by `autosafe train --backend llamafactory` to LLaMA-Factory's own argument
parsers, so that a key LLaMA-Factory renamed or dropped fails here and not on a GPU machine.

Usage:  python llamafactory_check.py CONFIG.yaml...   (training and merge configs, told apart by
        `export_dir`; one Python start checks them all)

- The training YAML goes through `llamafactory.hparams.get_train_args` (what `llamafactory-cli
  train` calls). It refuses unknown keys and checks the combinations it knows (stage, finetuning
  type, template, ...).
- Its `dataset` entries are looked up in `dataset_dir/dataset_info.json` by LLaMA-Factory's
  `get_dataset_list`, and the columns named there must be in the first record of the data file.
- The merge YAML goes through `get_infer_args` (what `llamafactory-cli export` calls).

The YAML is read with OmegaConf, as `llamafactory-cli` reads it. Prints one line
`autosafe: llamafactory config {...}` per accepted file with the parsed values, or
`autosafe: llamafactory rejected {"config", "error"}`, and exits non-zero when any was rejected.
Loads no model and no data beyond that first record.
"""

import argparse
import json
import os
import sys


def check_train(path, get_train_args, get_dataset_list, cfg):
    model, data, training, finetuning, _ = get_train_args(cfg)
    attrs = get_dataset_list(data.dataset, data.dataset_dir)
    datasets = []
    for attr in attrs:
        path = os.path.join(data.dataset_dir, attr.dataset_name)
        with open(path, encoding="utf-8") as f:
            first = json.loads(f.readline())
        columns = {
            c: getattr(attr, c)
            for c in ("prompt", "query", "response", "history", "messages", "system", "tools")
            if getattr(attr, c, None)
        }
        missing = [v for v in columns.values() if v not in first]
        # LLaMA-Factory fills absent optional columns itself; the ones it needs must be there.
        needed = ("prompt", "response") if attr.formatting == "alpaca" else ("messages",)
        lost = [columns.get(c) or c for c in needed if columns.get(c) not in first]
        if lost:
            sys.exit(f"llamafactory_check: {path}: first record lacks column(s) {lost} named in dataset_info.json")
        roles = []
        if attr.formatting == "sharegpt":
            known = {attr.user_tag, attr.assistant_tag, attr.observation_tag, attr.function_tag, attr.system_tag}
            for i, m in enumerate(first[attr.messages]):
                if attr.role_tag not in m or attr.content_tag not in m or m[attr.role_tag] not in known:
                    sys.exit(
                        f"llamafactory_check: {path}: record 1 message {i}: needs `{attr.role_tag}` in "
                        f"{sorted(known)} and `{attr.content_tag}` (dataset_info.json tags), got {sorted(m)}"
                    )
                roles.append(m[attr.role_tag])
        datasets.append(
            {
                "file": attr.dataset_name,
                "formatting": attr.formatting,
                "columns": columns,
                "absent_optional_columns": missing,
                "roles": roles,
            }
        )
    return {
        "kind": "train",
        "model_name_or_path": model.model_name_or_path,
        "stage": finetuning.stage,
        "finetuning_type": finetuning.finetuning_type,
        "lora_target": finetuning.lora_target,
        "lora_rank": finetuning.lora_rank,
        "template": data.template,
        "cutoff_len": data.cutoff_len,
        "mask_history": data.mask_history,
        "train_on_prompt": data.train_on_prompt,
        "datasets": datasets,
        "output_dir": training.output_dir,
        "max_steps": training.max_steps,
        "learning_rate": training.learning_rate,
        "bf16": training.bf16,
    }


def check_export(get_infer_args, cfg):
    model, data, finetuning, _ = get_infer_args(cfg)
    return {
        "kind": "export",
        "model_name_or_path": model.model_name_or_path,
        "adapter_name_or_path": model.adapter_name_or_path,
        "export_dir": model.export_dir,
        "template": data.template,
        "finetuning_type": finetuning.finetuning_type,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("configs", nargs="+")
    a = ap.parse_args()

    from omegaconf import OmegaConf
    from llamafactory.data.parser import get_dataset_list
    from llamafactory.hparams import get_infer_args, get_train_args

    rejected = 0
    for path in a.configs:
        cfg = dict(OmegaConf.to_container(OmegaConf.load(path)))
        try:
            if "export_dir" in cfg:
                out = check_export(get_infer_args, cfg)
            else:
                out = check_train(path, get_train_args, get_dataset_list, cfg)
        except (ValueError, SystemExit) as e:
            rejected += 1
            print("autosafe: llamafactory rejected " + json.dumps({"config": path, "error": str(e)}), flush=True)
            continue
        out["config"] = path
        print("autosafe: llamafactory config " + json.dumps(out, default=str), flush=True)
    sys.exit(1 if rejected else 0)


if __name__ == "__main__":
    main()
