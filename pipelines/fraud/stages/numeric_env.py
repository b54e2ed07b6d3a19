"""Pin the numeric code paths before numpy, scipy or scikit-learn load.

Imported first by every stage script and by predict.py. The same float
operations can give different last bits on two x86-64 machines because
the libraries pick their code for the CPU they find when they load:

- OpenBLAS (inside numpy and scipy) picks a kernel per CPU (Haswell,
  SkylakeX, Zen, ...) unless OPENBLAS_CORETYPE names one; the kernels sum
  in different orders. This is what made `models/logreg.pkl` differ
  between two machines of the same kind: one machine's environment set
  OPENBLAS_CORETYPE=Haswell, the other let OpenBLAS pick SkylakeX (AVX-512),
  and L-BFGS took another path to a slightly different optimum.
- glibc's libm picks FMA versions of exp, log, pow, ... on CPUs with FMA
  and AVX2 (what scikit-learn's logistic loss calls), generic SSE2 ones
  elsewhere.
- NumPy dispatches its loops to AVX2 or AVX-512 versions above its
  x86-64-v2 baseline.

So the script runs with the code every x86-64 CPU has: OpenBLAS's Prescott
(SSE3) kernels, libm's SSE2 functions, NumPy's baseline loops, and one
thread for BLAS and OpenMP. These are environment variables read when a
library loads (glibc's only when the process starts), so when any of them
is not as pinned the script starts itself again with them set (`exec`, the
same command line). The cost: logistic regression fits in ~2.5 s instead
of ~1.8 s at 100,000 claims.
"""

from __future__ import annotations

import os
import sys

PINNED = {
    "OPENBLAS_CORETYPE": "Prescott",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "MKL_CBWR": "COMPATIBLE",  # if numpy is linked against MKL instead
    "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR",
    "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX,-AVX2,-FMA,-FMA4,-AVX512F",
}


def pin() -> None:
    if all(os.environ.get(k) == v for k, v in PINNED.items()):
        return
    if "numpy" in sys.modules:  # too late to pin: say so rather than give other bits
        raise RuntimeError("numeric_env must be imported before numpy")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, {**os.environ, **PINNED})


pin()
