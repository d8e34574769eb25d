"""Merges an all-zero LoRA adapter into a GGUF base and saves the result, the way train_trl.py
merges a trained one: the check of the GGUF write-back (hf_to_gguf.py) on a model whose merged
weights must equal the base's exactly.

Usage:  python zero_lora_merge.py --gguf BASE.gguf --out DIR

transformers reads the GGUF (dequantized, float32), PEFT wraps every linear layer with a LoRA
adapter whose B matrices are zero at initialisation (so B·A is exactly zero), merge_and_unload
adds it, and save_pretrained writes the result. Needs the `train` environment.
"""

import argparse
import json
import os
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    if not os.path.isfile(a.gguf):
        sys.exit(f"zero_lora_merge: {a.gguf}: no such file")

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    t0 = time.time()
    d, f = os.path.split(os.path.abspath(a.gguf))
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    # As in train_trl.py: the dequantized weights are ordinary ones; the flag would block saving.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    peft = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    bs = [p for n, p in peft.named_parameters() if ".lora_B." in n]
    nonzero = sum(int((p != 0).sum()) for p in bs)
    if not bs or nonzero:
        sys.exit(f"zero_lora_merge: {len(bs)} LoRA B matrices, {nonzero} nonzero entries")
    merged = peft.merge_and_unload()
    merged.save_pretrained(a.out, safe_serialization=True)
    info = {
        "out": a.out,
        "lora_b_matrices": len(bs),
        "tie_word_embeddings": bool(model.config.tie_word_embeddings),
        "seconds": round(time.time() - t0, 1),
    }
    print(f"autosafe: zero_lora {json.dumps(info)}", flush=True)


if __name__ == "__main__":
    main()
