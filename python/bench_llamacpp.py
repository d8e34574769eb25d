"""llama.cpp's own speed on a GGUF, for `autosafe bench engine` (run by it; not a standalone tool).

Usage: python bench_llamacpp.py MODEL THREADS N_GEN REPS TOKENS_JSON
Feeds the given prompt token ids, then N_GEN greedy tokens one at a time, REPS times (after one
warm-up), and reports llama.cpp's internal perf counters (prompt-eval and eval time, which count
decode time only) as JSON: {"pp_tps": median, "gen_tps": median, "version": ...}.
"""

import json
import statistics
import sys

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
    ctx = llm._ctx.ctx
    pp, tg = [], []
    for rep in range(reps + 1):
        llm.reset()
        llama_cpp.llama_perf_context_reset(ctx)
        llm.eval(tokens)
        for _ in range(n_gen):
            nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            llm.eval([nxt])
        perf = llama_cpp.llama_perf_context(ctx)
        if rep == 0:
            continue
        pp.append(perf.n_p_eval / (perf.t_p_eval_ms / 1000.0))
        tg.append(perf.n_eval / (perf.t_eval_ms / 1000.0))
    print(json.dumps({"pp_tps": statistics.median(pp), "gen_tps": statistics.median(tg), "version": llama_cpp.__version__}))


if __name__ == "__main__":
    main()
