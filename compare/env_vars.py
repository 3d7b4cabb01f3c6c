"""The environment variables that change what torch or JAX does, by name: what a results file records.

An explicit list, no prefix matching: a prefix such as ``TF_`` also catches other tools' settings (e.g.
``TF_CLI_CONFIG_FILE``, a path to Terraform's config), which change nothing here. ``BEHAVIOUR_ENV`` is recorded
in every results ``meta.env`` and compared on ``--resume``; ``MEMORY_ENV`` is its allocator part
(``compare.env.memory_settings``, ``meta.memory_settings``).
"""
from __future__ import annotations

THREAD_ENV: tuple[str, ...] = (
    "OMP_NUM_THREADS", "OMP_PROC_BIND", "OMP_PLACES", "OMP_WAIT_POLICY", "OMP_DYNAMIC", "OMP_MAX_ACTIVE_LEVELS",
    "MKL_NUM_THREADS", "MKL_DYNAMIC", "MKL_THREADING_LAYER", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR",
    "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE", "KMP_AFFINITY", "KMP_BLOCKTIME", "KMP_HW_SUBSET",
    "DNNL_MAX_CPU_ISA", "ONEDNN_MAX_CPU_ISA", "DNNL_DEFAULT_FPMATH_MODE", "ONEDNN_DEFAULT_FPMATH_MODE",
)
MEMORY_ENV: tuple[str, ...] = (
    # glibc malloc (compare.benchmark.config.MALLOC_ENV sets two of them) and a preloaded allocator
    "MALLOC_ARENA_MAX", "MALLOC_ARENA_TEST", "MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_",
    "MALLOC_TRIM_THRESHOLD_", "MALLOC_PERTURB_", "MALLOC_CHECK_", "GLIBC_TUNABLES", "LD_PRELOAD",
    # torch's CUDA caching allocator, XLA's client allocator (compare.env.SHARED_GPU_ENV)
    "PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF", "PYTORCH_NO_CUDA_MEMORY_CACHING",
    "XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_ALLOCATOR",
    "TF_GPU_ALLOCATOR", "CUDA_VISIBLE_DEVICES",
)
JAX_ENV: tuple[str, ...] = (
    "XLA_FLAGS", "JAX_IMPL_BF16_CONV_BIAS", "JAX_PLATFORMS", "JAX_PLATFORM_NAME", "JAX_ENABLE_X64",
    "JAX_DEFAULT_MATMUL_PRECISION",
    "JAX_DEFAULT_DTYPE_BITS", "JAX_DISABLE_JIT", "JAX_NUM_CPU_DEVICES", "JAX_ENABLE_COMPILATION_CACHE",
    "JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "JAX_CPU_COLLECTIVES_IMPLEMENTATION",
    "JAX_CUDA_VISIBLE_DEVICES",
)
TORCH_ENV: tuple[str, ...] = (
    "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", "TORCH_CUDNN_V8_API_DISABLED", "TORCH_COMPILE_DISABLE",
    "TORCHDYNAMO_DISABLE", "TORCHINDUCTOR_CACHE_DIR", "TORCHINDUCTOR_FREEZING", "TORCHINDUCTOR_MAX_AUTOTUNE",
    "TORCHINDUCTOR_COMPILE_THREADS", "TORCHINDUCTOR_FORCE_DISABLE_CACHES", "PYTORCH_TUNABLEOP_ENABLED",
    "PYTORCH_NVFUSER_DISABLE",
)
CUDA_ENV: tuple[str, ...] = (
    "CUDA_DEVICE_ORDER", "CUDA_LAUNCH_BLOCKING", "CUDA_MODULE_LOADING", "CUBLAS_WORKSPACE_CONFIG",
    "NVIDIA_TF32_OVERRIDE", "NCCL_P2P_DISABLE", "NCCL_SHM_DISABLE", "NCCL_IB_DISABLE",
)
BEHAVIOUR_ENV: tuple[str, ...] = tuple(dict.fromkeys(THREAD_ENV + MEMORY_ENV + JAX_ENV + TORCH_ENV + CUDA_ENV))


def behaviour_env(env: dict[str, str], names: tuple[str, ...] = BEHAVIOUR_ENV) -> dict[str, str]:
    """The variables of ``names`` set in ``env`` (name -> value), sorted by name."""
    return {k: env[k] for k in sorted(names) if k in env}
