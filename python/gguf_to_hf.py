"""Writes a GGUF model as a Hugging Face model directory (config, safetensors, tokenizer), for
trainers that read only such directories (LLaMA-Factory: `model_name_or_path`).

Usage:  python gguf_to_hf.py --gguf MODEL.gguf --out DIR [--dtype float32|bfloat16|float16]

transformers reads the GGUF by dequantizing every tensor (so a Q4_1 file becomes ordinary
float32 weights with Q4_1's rounding), then `save_pretrained` writes them. The reverse direction
is hf_to_gguf.py. Needs torch, transformers and gguf (both training environments have them).

The special tokens are then set from the GGUF's own `tokenizer.ggml.*` keys. transformers 4.57
(the LLaMA-Factory environment) reads SmolLM2's GGUF tokenizer as a Llama tokenizer with
eos = <|im_start|> and a BOS token added to every text; the GGUF says eos = <|im_end|> and no BOS.
transformers 5.23 reads it right. The script prints the ids of a short text to show the result.
"""

import argparse
import json
import os
import sys
import time


def fix_special_tokens(tok, path):
    """Sets bos / eos / unk / pad and add_bos_token / add_eos_token from the GGUF's metadata.
    Returns what changed."""
    from gguf import GGUFReader

    fields = GGUFReader(path).fields

    def meta(key):
        f = fields.get(f"tokenizer.ggml.{key}")
        return None if f is None else f.contents()

    fixed = {}
    for role, key in (
        ("bos", "bos_token_id"),
        ("eos", "eos_token_id"),
        ("unk", "unknown_token_id"),
        ("pad", "padding_token_id"),
    ):
        i = meta(key)
        if i is None:
            continue
        want = tok.convert_ids_to_tokens(int(i))
        if getattr(tok, f"{role}_token") != want:
            fixed[role] = [getattr(tok, f"{role}_token"), want]
            setattr(tok, f"{role}_token", want)
    for flag in ("add_bos_token", "add_eos_token"):
        v = meta(flag)
        if v is not None and hasattr(tok, flag) and getattr(tok, flag) != bool(v):
            fixed[flag] = [getattr(tok, flag), bool(v)]
            # LlamaTokenizerFast rebuilds its post-processor on this assignment.
            setattr(tok, flag, bool(v))
    return fixed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gguf", required=True, help="the GGUF file")
    ap.add_argument("--out", required=True, help="the Hugging Face directory to write")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    a = ap.parse_args()
    if not os.path.isfile(a.gguf):
        sys.exit(f"gguf_to_hf: {a.gguf}: no such file")

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.time()
    d, f = os.path.split(os.path.abspath(a.gguf))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=getattr(torch, a.dtype))
    # The weights are dequantized; drop the quantization flags transformers leaves on the model,
    # which would otherwise be saved into config.json.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    fixed = fix_special_tokens(tok, a.gguf)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.config.bos_token_id = tok.bos_token_id
    model.config.eos_token_id = tok.eos_token_id
    model.config.pad_token_id = tok.pad_token_id
    os.makedirs(a.out, exist_ok=True)
    model.save_pretrained(a.out, safe_serialization=True)
    tok.save_pretrained(a.out)
    print(
        "autosafe: gguf_to_hf "
        + json.dumps(
            {
                "gguf": a.gguf,
                "out": a.out,
                "parameters": model.num_parameters(),
                "architecture": model.config.architectures,
                "seconds": round(time.time() - t0, 1),
                "special_tokens": {
                    "bos": tok.bos_token,
                    "eos": tok.eos_token,
                    "pad": tok.pad_token,
                    "add_bos_token": getattr(tok, "add_bos_token", None),
                },
                "fixed": fixed,
                "ids_of_hello": tok("hello").input_ids,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
