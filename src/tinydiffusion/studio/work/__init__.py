"""The studio's work: what a job is and what it does on the worker thread (imports nothing, like ``studio/``).

    params.py     the sampling parameters of a request, checked like the CLI before any work is queued
    edits.py      an edit request (image, mask, strength) checked before queueing, and run on the worker
    jobs.py       the bounded queue, its worker thread, cancellation, the last finished results
    runner.py     what a job does on the worker: sample (streaming frames), compare or edit; the pipeline cache
    frames.py     a job's sampler callback (cancel, count, stream; the GIF kept by the library's recorder), rows
    encode.py     PNG grids, data URLs, GIF and .npz bytes (in memory)
    teach.py      Teach: a fine-tune request checked, its pictures written to a fresh run folder, run in a thread
"""
