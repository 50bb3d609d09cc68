import numpy as np
import numpy.typing as npt

def dots(
    codes: npt.NDArray[np.int8], query: npt.NDArray[np.int8], out: npt.NDArray[np.float32], /
) -> None: ...
def simd() -> bool: ...
def above(
    codes: npt.NDArray[np.int8],
    query: npt.NDArray[np.int8],
    floor: float,
    rows_out: npt.NDArray[np.int64],
    scores_out: npt.NDArray[np.float32],
    /,
) -> int: ...
