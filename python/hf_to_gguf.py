"""Writes a fine-tuned Llama- or Qwen2-architecture model (Hugging Face safetensors) back into GGUF, taking
every piece of metadata (hyperparameters, tokenizer, chat template) from the GGUF it was trained
from. The result loads as `local:/path/model.gguf` in AutoSafe's embedded engine.

Usage:  python hf_to_gguf.py --model MERGED_DIR --like BASE.gguf --out OUT.gguf [--type q8_0|f16|f32]
        python hf_to_gguf.py --like BASE.gguf --out OUT.gguf --type q8_0   (no --model: the base
        itself, dequantized and written at --type, so base and fine-tuned compare at one precision)

This is the return path of the offline loop. transformers reads a GGUF by dequantizing it,
PEFT trains and merges a LoRA adapter, and this script maps each tensor of the base GGUF to its
Hugging Face name, takes the merged weight, and writes it. Norms and biases stay float32; matrices
get --type. Handled architectures (any other is refused, since its tensor names and row orders are
unknown here):

- llama (SmolLM2, Llama): transformers un-permutes the rows of attn_q / attn_k (llama.cpp stores
  them in rotary-pair order), so they are permuted back.
- qwen2 (Qwen2.5): transformers 5.23 reads qwen2 with no tensor processor, so q / k rows are taken
  as they are; attn_q / attn_k / attn_v carry biases. output.weight is written only where the base
  GGUF has it (from lm_head, or from the embeddings when the model ties them).
"""

import argparse
import glob
import json
import os
import re
import sys

import numpy as np

LAYER = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
GLOBAL = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
# Per architecture: whether transformers un-permuted attn_q / attn_k rows on reading, so that they
# must be permuted back (transformers' TENSOR_PROCESSORS has an entry for llama, none for qwen2).
ARCHITECTURES = {"llama": True, "qwen2": False}
# Keys the writer sets itself.
SKIP_KEYS = {"general.architecture", "general.file_type"}


def hf_name(gguf_name):
    if gguf_name in GLOBAL:
        return GLOBAL[gguf_name]
    m = re.fullmatch(r"blk\.(\d+)\.([a-z_]+)\.(weight|bias)", gguf_name)
    if not m or m.group(2) not in LAYER:
        sys.exit(f"hf_to_gguf: no Hugging Face name known for tensor {gguf_name}")
    return f"model.layers.{m.group(1)}.{LAYER[m.group(2)]}.{m.group(3)}"


def to_rotary_rows(w, n_head):
    """The inverse of the un-permutation transformers applies to attn_q / attn_k when reading GGUF:
    rows grouped per head as (2, half) go back to (half, 2)."""
    half = w.shape[0] // n_head // 2
    return w.reshape(n_head, 2, half, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def put(writer, name, w, qtype):
    """Adds one tensor: vectors (norms) in float32, matrices in `qtype`."""
    import gguf
    from gguf import GGMLQuantizationType as Q

    if w.ndim == 1 or qtype == Q.F32:
        writer.add_tensor(name, w)
    elif qtype == Q.F16:
        writer.add_tensor(name, w.astype(np.float16))
    else:
        writer.add_tensor(name, gguf.quants.quantize(w, qtype), raw_dtype=qtype)


def load_state(model_dir):
    from safetensors.numpy import load_file

    files = sorted(glob.glob(os.path.join(model_dir, "*.safetensors")))
    if not files:
        sys.exit(f"hf_to_gguf: no *.safetensors in {model_dir}")
    state = {}
    for f in files:
        state.update(load_file(f))
    return state


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="Hugging Face model directory (merged); default: the base itself")
    ap.add_argument("--like", required=True, help="the GGUF the model was trained from")
    ap.add_argument("--out", required=True)
    ap.add_argument("--type", default="q8_0", choices=["q8_0", "f16", "f32"])
    args = ap.parse_args()

    import gguf
    from gguf import GGMLQuantizationType as Q
    from gguf import GGUFValueType as V

    reader = gguf.GGUFReader(args.like)
    arch = reader.fields["general.architecture"].contents()
    if arch not in ARCHITECTURES:
        sys.exit(
            f"hf_to_gguf: {args.like}: architecture {arch!r} is not handled "
            f"(only {', '.join(sorted(ARCHITECTURES))}); use llama.cpp's own converter"
        )
    permute = ARCHITECTURES[arch]
    if args.model:
        with open(os.path.join(args.model, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
        n_head = config["num_attention_heads"]
        n_kv = config.get("num_key_value_heads") or n_head
        state = load_state(args.model)
    else:
        base = {t.name: gguf.quants.dequantize(t.data, t.tensor_type) for t in reader.tensors}

    qtype = {"q8_0": Q.Q8_0, "f16": Q.F16, "f32": Q.F32}[args.type]
    file_type = {"q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "f32": gguf.LlamaFileType.ALL_F32}[args.type]
    tmp = args.out + ".partial"
    writer = gguf.GGUFWriter(tmp, arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in SKIP_KEYS:
            continue
        vtype = field.types[0]
        value = field.contents()
        if vtype == V.ARRAY:
            writer.add_key_value(key, value, vtype, sub_type=field.types[-1])
        else:
            writer.add_key_value(key, value, vtype)
    writer.add_file_type(file_type)

    used = set()
    for t in reader.tensors:
        if not args.model:
            put(writer, t.name, base[t.name].astype(np.float32), qtype)
            continue
        name = hf_name(t.name)
        if name not in state and name == "lm_head.weight":
            name = "model.embed_tokens.weight"  # tied embeddings
        if name not in state:
            sys.exit(f"hf_to_gguf: {args.model} has no tensor {name} (for {t.name})")
        used.add(name)
        w = state[name].astype(np.float32)
        if permute and ".attn_q." in t.name:
            w = to_rotary_rows(w, n_head)
        elif permute and ".attn_k." in t.name:
            w = to_rotary_rows(w, n_kv)
        put(writer, t.name, w, qtype)
    unused = sorted(set(state) - used - {"lm_head.weight"}) if args.model else []
    if unused:
        sys.exit(f"hf_to_gguf: tensors of {args.model} with no place in the GGUF: {unused[:5]}")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, args.out)
    print(f"autosafe: gguf {json.dumps({'path': args.out, 'type': args.type, 'tensors': len(reader.tensors)})}", flush=True)


if __name__ == "__main__":
    main()
