"""How the server writes outputs: tensors as JSON floats or base64, bodies through ``orjson``."""

from __future__ import annotations

import base64
from typing import Any

import torch
from fastapi.responses import JSONResponse

try:
    import orjson as _orjson
except ImportError:  # the standard library's encoder
    _orjson = None


def encode_data(data: torch.Tensor, fmt: str) -> list[Any] | str:
    """A tensor as JSON floats or base64 of little-endian float32 (OpenAI's format)."""
    if fmt == "base64":
        return base64.b64encode(data.float().contiguous().numpy().astype("<f4").tobytes()).decode("ascii")
    return data.tolist()


def encode_batch(outs: list[Any], fmt: str) -> list[Any]:
    """Every output's data in ``fmt``; same-shaped float outputs convert in one call.

    With ``orjson`` the float rows stay float32 numpy arrays, which it writes directly: each
    value as the shortest text that reads back as the same float32 (the precision the model
    computed), about 40% fewer bytes than the double digits of ``tolist`` and a third of the
    time for a client to parse (MiniLM: 84 vs 248 us per 384-d vector with ``json.loads``).
    """
    datas = [o.outputs.data for o in outs]
    if fmt == "float" and datas and all(d.shape == datas[0].shape for d in datas):
        rows = datas[0][None] if len(datas) == 1 else torch.stack(datas)  # one: no copy
        # contiguous: one output may be a view (token_embed rows cut to ``dimensions``), and
        # orjson writes only C-contiguous arrays
        rows = rows.float().contiguous()
        return list(rows.numpy()) if _orjson is not None else rows.tolist()
    return [encode_data(d, fmt) for d in datas]


class FastJSONResponse(JSONResponse):
    """A JSON response rendered by ``orjson`` when it is installed (the server extra has it).

    Embedding responses are mostly floats, which the standard library's encoder writes
    slowly: about a fifth of the event loop's time per request under load. ``orjson`` writes
    the same shortest round-trip text for each float.
    """

    def render(self, content: Any) -> bytes:
        if _orjson is None:
            return super().render(content)
        options = _orjson.OPT_NON_STR_KEYS | _orjson.OPT_SERIALIZE_NUMPY
        return _orjson.dumps(content, default=_plain, option=options)


def _plain(value: Any) -> Any:
    """What ``orjson`` does not write itself as plain values: numpy arrays that are not
    C-contiguous (a plugin's output, say), numpy scalars and tensors."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars
    if callable(tolist):
        return tolist()
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def json_response(body: dict[str, Any]) -> JSONResponse:
    return FastJSONResponse(body)
