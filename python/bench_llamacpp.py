"""llama.cpp's own speed on a GGUF, for `autosafe bench engine` (run by it; not a standalone tool).

Usage: python bench_llamacpp.py MODEL THREADS N_GEN REPS TOKENS_JSON [SEQS]
Feeds the given prompt token ids, then N_GEN greedy tokens one at a time, REPS times (after one
warm-up), timing only llama-cpp-python's `eval` calls (llama_decode plus copying the logits out;
the argmax between them is not counted). With SEQS > 1, also SEQS sequences decoded together
through llama.cpp's own batch API (one `llama_decode` per step for all of them, the way
llama.cpp's batched-bench does), timing the decode calls of the generation steps. Prints JSON:
{"pp_tps": median, "gen_tps": median, "gen_tps_batched": median or null, "version": ...}.
"""

import json
import statistics
import sys
import time

import llama_cpp
import numpy as np


def batched(llm, tokens, n_gen, seqs, threads, reps):
    """Aggregate generated tokens/s of `seqs` greedy sequences decoded together."""
    lc = llama_cpp
    model = llm._model.model
    params = lc.llama_context_default_params()
    per_seq = -(-(len(tokens) + n_gen + 16) // 256) * 256  # llama.cpp pads contexts to 256
    params.n_ctx = per_seq * seqs
    params.n_batch = max(len(tokens), seqs)
    params.n_ubatch = params.n_batch
    params.n_seq_max = seqs
    params.n_threads = threads
    params.n_threads_batch = threads
    ctx = lc.llama_init_from_model(model, params)
    n_vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(model))
    batch = lc.llama_batch_init(max(len(tokens), seqs), 0, 1)

    def decode(entries):
        batch.n_tokens = len(entries)
        for i, (token, pos, seq, logits) in enumerate(entries):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = logits
        if lc.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")

    def argmax(i):
        return int(np.argmax(np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, i), shape=(n_vocab,))))

    rates = []
    for rep in range(reps + 1):
        lc.llama_memory_clear(lc.llama_get_memory(ctx), True)
        last = []
        for seq in range(seqs):
            decode([(t, i, seq, i == len(tokens) - 1) for i, t in enumerate(tokens)])
            last.append(argmax(len(tokens) - 1))
        t_gen = 0.0
        for k in range(n_gen):
            entries = [(last[seq], len(tokens) + k, seq, True) for seq in range(seqs)]
            t0 = time.perf_counter()
            decode(entries)
            t_gen += time.perf_counter() - t0
            last = [argmax(seq) for seq in range(seqs)]
        if rep:
            rates.append(seqs * n_gen / t_gen)
    lc.llama_batch_free(batch)
    lc.llama_free(ctx)
    return statistics.median(rates)


def main() -> None:
    model, threads, n_gen, reps, tokens_json = sys.argv[1:6]
    seqs = int(sys.argv[6]) if len(sys.argv) > 6 else 1
    threads, n_gen, reps = int(threads), int(n_gen), int(reps)
    tokens = json.loads(tokens_json)
    llm = llama_cpp.Llama(
        model_path=model,
        n_ctx=len(tokens) + n_gen + 16,
        n_batch=512,
        n_ubatch=512,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    pp, tg = [], []
    for rep in range(reps + 1):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(tokens)
        t_prompt = time.perf_counter() - t0
        t_gen = 0.0
        for _ in range(n_gen):
            nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            t0 = time.perf_counter()
            llm.eval([nxt])
            t_gen += time.perf_counter() - t0
        if rep == 0:
            continue
        pp.append(len(tokens) / t_prompt)
        tg.append(n_gen / t_gen)
    gen_batched = batched(llm, tokens, n_gen, seqs, threads, reps) if seqs > 1 else None
    print(json.dumps({"pp_tps": statistics.median(pp), "gen_tps": statistics.median(tg), "gen_tps_batched": gen_batched, "version": llama_cpp.__version__}))


if __name__ == "__main__":
    main()
