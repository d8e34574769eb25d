"""llama.cpp's own speed on a GGUF, for `autosafe bench engine` (run by it; not a standalone tool).

Usage: python bench_llamacpp.py MODEL THREADS N_GEN REPS TOKENS_JSON
Feeds the given prompt token ids, then N_GEN greedy tokens one at a time, REPS times (after one
warm-up), timing only llama-cpp-python's `eval` calls (llama_decode plus copying the logits out;
the argmax between them is not counted), and prints JSON:
{"pp_tps": median, "gen_tps": median, "version": ...}.
"""

import json
import statistics
import sys
import time

import llama_cpp
import numpy as np


def main() -> None:
    model, threads, n_gen, reps, tokens_json = sys.argv[1:6]
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
    print(json.dumps({"pp_tps": statistics.median(pp), "gen_tps": statistics.median(tg), "version": llama_cpp.__version__}))


if __name__ == "__main__":
    main()
