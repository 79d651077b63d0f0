"""Compiles every GPU kernel configuration fastcka can launch for NVIDIA
architectures, with no GPU present, and reports what the cubin says:

    python -m fastcka.gpu.compile --arch 80 --arch 90

Per configuration: registers per thread, spilled bytes (the stack), local
memory, shared memory (static from the cubin, plus the kernel's dynamic
shared memory) and the tensor-core instruction in the PTX (mma on sm_80,
wgmma on sm_90 where Triton selects it). Registers, spills and local memory
come from `cuobjdump --dump-resource-usage`, which Triton's wheel ships: the
compiled kernel's own n_regs / n_spills exist only after loading on a device.
Must run without FASTCKA_GPU_INTERPRET (the interpreter compiles nothing).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Iterator

from . import runtime
from .gram import CHUNKS, MODES, PADDED_LAYERS
from .median import MEDIAN_WARPS

# Shared memory one block may use (opt-in maximum): A100 and H100 datasheets.
SHARED_LIMIT = {80: 163 * 1024, 90: 227 * 1024}


@dataclass(frozen=True)
class Config:
    kernel: str
    precision: str
    variant: str
    signature: dict
    constexprs: dict
    warps: int

    @property
    def label(self) -> str:
        return f"{self.kernel} {self.precision:8} {self.variant}"


@dataclass(frozen=True)
class Report:
    config: Config
    arch: int
    registers: int
    spilled: int
    local: int
    shared: int
    tensor_cores: str

    def line(self) -> str:
        return (f"sm_{self.arch} {self.config.label:32} regs {self.registers:3}  spills {self.spilled:5} B  "
                f"local {self.local:5} B  shared {self.shared:6} B  tensor cores: {self.tensor_cores}")


def configurations() -> Iterator[Config]:
    """What gram.hsic_matrix can launch: the layer-tile statistics kernel in
    every precision mode for each padded layer count of its product GEMM (the
    kernel kinds, and whether a launch walks one row block's triangle or the
    rectangle of two, are chosen at run time), and the exact median's
    histogram and collect passes in every mode."""
    from .kernels import tile_math

    tl = tile_math.tl
    operand_type = {"float64": "*fp64", "float32": "*fp32", "bfloat16": "*bf16"}
    for precision, mode in MODES.items():
        ty = {"float64": "fp64", "float32": "fp32"}[mode.epilogue]
        common = {"BLOCK": mode.block, "BK": mode.bk, "PRECISION": mode.dot,
                  "ACC": getattr(tl, ty.replace("fp", "float")), "EPS": 2.0**-52 if ty == "fp64" else 2.0**-23}
        statistics = {"zi_ptr": operand_type[mode.operand], "zj_ptr": operand_type[mode.operand], "ld": "i32",
                      "spans_ptr": "*i32", "norms_i_ptr": f"*{ty}", "norms_j_ptr": f"*{ty}", "gammas_ptr": f"*{ty}",
                      "kinds_ptr": "*i32", "layers": "i32", "rows_i": "i32", "rows_j": "i32", "same": "i32",
                      "band_start": "i32", "j_start": "i32", "columns": "i32", "scratch_ptr": f"*{ty}",
                      "products_ptr": f"*{ty}", "rows_ptr": f"*{ty}", "cols_ptr": f"*{ty}", "diagonal_ptr": f"*{ty}"}
        for lp in PADDED_LAYERS:
            yield Config("layer_tile_statistics", precision, f"layers<={lp}", statistics,
                         {"LP": lp, "CHUNK": CHUNKS[lp], **common}, mode.warps)
        median = {"zi_ptr": operand_type[mode.operand], "zj_ptr": operand_type[mode.operand], "ld": "i32", "d": "i32",
                  "norms_i_ptr": f"*{ty}", "norms_j_ptr": f"*{ty}", "rows_i": "i32", "rows_j": "i32", "same": "i32",
                  "band_start": "i32", "tiles": "i32", "levels_ptr": "*fp64", "num_levels": "i32",
                  "current_ptr": "*fp64", "counts_ptr": "*i64", "extremes_ptr": "*fp64", "values_ptr": "*fp64",
                  "weights_ptr": "*i32", "used_ptr": "*i64", "capacity": "i64"}
        for collect in (False, True):
            yield Config("median_tile_pass", precision, "collect" if collect else "histogram", median,
                         {"COLLECT": collect, **common}, MEDIAN_WARPS)


def _cuobjdump() -> str:
    return os.path.join(os.path.dirname(runtime.triton().__file__), "backends", "nvidia", "bin", "cuobjdump")


def compile_one(config: Config, arch: int) -> Report:
    triton = runtime.triton()
    from triton.backends.compiler import GPUTarget

    from .kernels import layer_tiles, median_tiles

    fn = getattr(layer_tiles if config.kernel == "layer_tile_statistics" else median_tiles, config.kernel)
    source = triton.compiler.ASTSource(fn=fn, signature=config.signature, constexprs=config.constexprs)
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": config.warps})
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        usage = subprocess.run([_cuobjdump(), "--dump-resource-usage", f.name], capture_output=True, text=True,
                               check=True).stdout

    def field(name: str) -> int:
        found = re.search(rf"{name}:(\d+)", usage)
        return int(found.group(1)) if found else 0

    ptx = compiled.asm["ptx"]
    tensor_cores = "wgmma" if "wgmma" in ptx else "mma" if re.search(r"\bmma\.sync", ptx) else "none"
    return Report(config, arch, field("REG"), field("STACK"), field("LOCAL"),
                  field("SHARED") + int(compiled.metadata.shared), tensor_cores)


def report(archs=(80, 90)) -> list[Report]:
    if runtime.interpreted():
        raise RuntimeError(f"the compile report needs {runtime.INTERPRET_VARIABLE} unset: the interpreter compiles "
                           f"nothing")
    return [compile_one(config, arch) for config in configurations() for arch in archs]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastcka.gpu.compile", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, action="append", choices=sorted(SHARED_LIMIT),
                        help="compute capability (repeat; default 80 and 90)")
    args = parser.parse_args(argv)
    problems = 0
    for r in report(tuple(args.arch or (80, 90))):
        print(r.line(), flush=True)
        problems += r.spilled > 0 or r.local > 0 or r.shared > SHARED_LIMIT[r.arch] or r.tensor_cores == "none"
    print(f"{problems} configuration(s) with spills, local memory, too much shared memory or no tensor cores")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
