"""Supervised fine-tuning (or DPO) with TRL for `autosafe train --backend trl`.

Usage:  python train_trl.py --config trl_config.json [--check-config]
        accelerate launch --multi_gpu --num_processes N train_trl.py --config trl_config.json

The config is written by `autosafe train`. It is checked against train_trl.schema.json, which sits
next to this script; the Rust tests check the generated config against the same file. Records
are rendered with the model's own chat template into a text prompt (everything before the
target turn) and a text completion (the target: the final safe action). SFTTrainer then trains
with completion_only_loss, so the loss falls on the completion only.

With method "dpo" the records are preference pairs: the prompt is rendered the same way, the
chosen side (the kept safe action) and the rejected side (the caught unsafe action) each as the
completion would be, and DPOTrainer trains a LoRA adapter. The reference model is the base with
the adapter disabled (TRL's behaviour for a PEFT model without ref_model), so no second copy of
the weights is loaded.

Progress lines start with "autosafe:" so that `autosafe train` can pick them out of the
trainer's output.
"""

import argparse
import glob
import json
import os
import sys
import time


def log(msg, **fields):
    """One progress line: `autosafe: <msg> {json}`."""
    tail = (" " + json.dumps(fields, sort_keys=True)) if fields else ""
    print(f"autosafe: {msg}{tail}", flush=True)


# --- config check (the subset of JSON Schema that train_trl.schema.json uses) -------------------

_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


def _type_ok(value, name):
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[name])


def check(value, schema, path="config"):
    """Returns a list of `path: message` problems."""
    errors = []
    types = schema.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        if not any(_type_ok(value, n) for n in names):
            return [f"{path}: expected {' or '.join(names)}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: must be {schema['const']!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: {value} < minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: {value} > maximum {schema['maximum']}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            errors.append(f"{path}: {value} <= {schema['exclusiveMinimum']}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path}.{key}: missing")
        for key, sub in value.items():
            if key in props:
                errors.extend(check(sub, props[key], f"{path}.{key}"))
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}.{key}: unknown field")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors.extend(check(item, schema["items"], f"{path}[{i}]"))
    return errors


def load_config(path):
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "train_trl.schema.json"), encoding="utf-8") as f:
        schema = json.load(f)
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    problems = check(cfg, schema)
    if cfg.get("method") in ("lora", "dpo") and cfg.get("lora") is None:
        problems.append(f"config.lora: required when method is {cfg.get('method')}")
    if (cfg.get("method") == "dpo") != (cfg.get("dpo") is not None):
        problems.append("config.dpo: an object exactly when method is dpo")
    if problems:
        sys.exit(f"{path}: invalid config:\n  " + "\n  ".join(problems))
    return cfg


# --- data ----------------------------------------------------------------------------------------


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    sys.exit(f"{path}:{n}: not JSON: {e}")


def to_messages(record, fmt, target="completion"):
    """(prompt messages, target messages, tools) of one exported record. `target` names the
    side: "completion" (SFT), "chosen" or "rejected" (preference pairs)."""
    if fmt == "alpaca":
        prompt = [
            {"role": "system", "content": record["instruction"]},
            {"role": "user", "content": record["input"]},
        ]
        text = record["output" if target == "completion" else target]
        return prompt, [{"role": "assistant", "content": text}], None
    return record["prompt"], record[target], record.get("tools") or None


def render(tokenizer, record, fmt, path, line, max_prompt_tokens=None, targets=("completion",)):
    """Text prompt and each target: the chat template over the whole conversation, split where
    the target turn begins. With max_prompt_tokens, only the prompt's last tokens are kept (a
    CPU smoke run's shortcut: the targets and the end of the prompt stay intact)."""
    out = {}
    for target in targets:
        prompt, completion, tools = to_messages(record, fmt, target)
        kw = {"tokenize": False}
        if tools:
            kw["tools"] = tools
        head = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, **kw)
        full = tokenizer.apply_chat_template(prompt + completion, **kw)
        if not full.startswith(head):
            sys.exit(
                f"{path}:{line}: the chat template does not render the prompt as a prefix of the "
                f"whole conversation; the {target} cannot be separated"
            )
        out[target] = full[len(head):]
    if max_prompt_tokens:
        ids = tokenizer(head, add_special_tokens=False)["input_ids"]
        if len(ids) > max_prompt_tokens:
            head = tokenizer.decode(ids[-max_prompt_tokens:])
    out["prompt"] = head
    return out


# --- main ----------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--check-config", action="store_true", help="check the config and exit")
    args = ap.parse_args()
    cfg = load_config(args.config)
    if args.check_config:
        log("config ok", path=args.config)
        return

    import importlib.metadata as md

    versions = {
        p: md.version(p)
        for p in ("torch", "transformers", "trl", "peft", "datasets", "accelerate")
    }
    log("versions", **versions)

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    mcfg = cfg["model"]
    load_kw = {"trust_remote_code": mcfg["trust_remote_code"]}
    if mcfg["gguf_file"]:
        load_kw["gguf_file"] = mcfg["gguf_file"]
    t0 = time.time()
    tokenizer = AutoTokenizer.from_pretrained(mcfg["name_or_path"], **load_kw)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = getattr(torch, mcfg["dtype"])
    if not torch.cuda.is_available() and dtype != torch.float32:
        log("no GPU: training in float32", asked=mcfg["dtype"])
        dtype = torch.float32
    model = AutoModelForCausalLM.from_pretrained(mcfg["name_or_path"], dtype=dtype, **load_kw)
    if mcfg["gguf_file"]:
        # transformers dequantizes a GGUF into plain tensors but still flags the model as
        # quantized, which blocks full fine-tuning and saving. The weights are ordinary ones.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    log("model loaded", seconds=round(time.time() - t0, 1), parameters=model.num_parameters())

    data = cfg["data"]
    dpo = cfg["method"] == "dpo"
    targets = ("chosen", "rejected") if dpo else ("completion",)
    rows = [
        render(
            tokenizer, r, data["format"], data["train_file"], i, data["max_prompt_tokens"], targets
        )
        for i, r in enumerate(read_jsonl(data["train_file"]), 1)
    ]
    if not rows:
        sys.exit(f"{data['train_file']}: no records")
    dataset = Dataset.from_list(rows)

    sft = dict(cfg["sft"])
    if not torch.cuda.is_available():
        sft["bf16"] = False
    peft_config = None
    if cfg["method"] in ("lora", "dpo"):
        from peft import LoraConfig

        lc = cfg["lora"]
        peft_config = LoraConfig(
            r=lc["r"],
            lora_alpha=lc["alpha"],
            lora_dropout=lc["dropout"],
            target_modules=lc["target_modules"],
            task_type="CAUSAL_LM",
        )
    if dpo:
        # No ref_model: DPOTrainer uses the PEFT model with its adapter disabled as reference.
        sft.pop("completion_only_loss", None)
        trainer = DPOTrainer(
            model=model,
            args=DPOConfig(**sft, **cfg["dpo"]),
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
        )
        ds = trainer.train_dataset
        log(
            "pairs",
            records=len(ds),
            prompt_tokens=sum(len(x) for x in ds["prompt_ids"]),
            chosen_tokens=sum(len(x) for x in ds["chosen_ids"]),
            rejected_tokens=sum(len(x) for x in ds["rejected_ids"]),
            beta=trainer.args.beta,
            reference="base with the adapter disabled",
        )
    else:
        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(**sft),
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
        )
        ds = trainer.train_dataset
        # TRL folds the completion mask into `labels` (-100 = no loss) or keeps it as a column.
        if "labels" in ds.column_names:
            masks = [[int(x != -100) for x in labels] for labels in ds["labels"]]
        elif "completion_mask" in ds.column_names:
            masks = ds["completion_mask"]
        else:
            sys.exit("train_trl: the tokenized dataset has neither labels nor completion_mask")
        log(
            "loss mask",
            records=len(ds),
            tokens=sum(len(m) for m in masks),
            trained_tokens=sum(sum(m) for m in masks),
        )
    out = sft["output_dir"]
    resume = bool(glob.glob(os.path.join(out, "checkpoint-*")))
    if resume:
        log("resuming from the last checkpoint", output_dir=out)
    t0 = time.time()
    result = trainer.train(resume_from_checkpoint=True if resume else None)
    fields = {}
    if dpo:
        # The last logged DPO metrics: the reward margin and how often chosen beat rejected.
        logged = [h for h in trainer.state.log_history if "rewards/margins" in h]
        if logged:
            fields = {
                "rewards_margins": logged[-1]["rewards/margins"],
                "rewards_accuracies": logged[-1]["rewards/accuracies"],
            }
    log(
        "trained",
        seconds=round(time.time() - t0, 1),
        steps=result.global_step,
        train_loss=round(result.training_loss, 4),
        **fields,
    )
    trainer.save_model(out)
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(out)
        log("saved", output_dir=out, method=cfg["method"])
        merge = cfg["merge"]
        if merge and cfg["method"] in ("lora", "dpo"):
            merged = trainer.model.merge_and_unload()
            merged.save_pretrained(merge["output_dir"], safe_serialization=True)
            tokenizer.save_pretrained(merge["output_dir"])
            log("merged", output_dir=merge["output_dir"])


if __name__ == "__main__":
    main()
