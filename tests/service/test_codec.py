import io
import json

import numpy as np
import pytest

from service import codec
from service.errors import (
    BadRequestError,
    InvalidInputError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)


def cutout(rng, columns=32):
    return rng.standard_normal((9, columns)).round(3).tolist()


def body(obj) -> bytes:
    return json.dumps(obj).encode()


def test_single_detection_decodes_to_a_canonical_cutout(rng):
    product = cutout(rng, 100)
    detection = codec.decode_single(body({"detectid": 7, "cutout": product, "wave": 4500.0}))
    assert detection.detectid == 7 and detection.wave == 4500.0
    np.testing.assert_allclose(detection.cutout, np.array(product, "f4")[:, 34:66])


@pytest.mark.parametrize(
    ("raw", "pointer"),
    [
        (b'{"cutout": [[NaN]]}', "/cutout/0/0"),
        (b'{"detectid": 1, "cutout": [[1e400]]}', "/cutout/0/0"),
        (b'{"cutout": [[true]]}', "/cutout/0/0"),
        (b'{"cutout": [["1.0"]]}', "/cutout/0/0"),
        (b'{"cutout": [[null]]}', "/cutout/0/0"),
        (b'{"cutout": 5}', "/cutout"),
        (b'{"cutout": [[1, 2], [3]]}', "/cutout"),
        (b"{}", "/cutout"),
        (b'{"cutout": [[1]], "colour": "red"}', "/colour"),
        (b'{"cutout": [[1]], "detectid": true}', "/detectid"),
        (b'{"cutout": [[1]], "detectid": 18446744073709551615}', "/detectid"),
        (b'{"cutout": [[1]], "detectid": ""}', "/detectid"),
        (b'{"cutout": [[1]], "wave": -3}', "/wave"),
        (b"[1, 2]", "/"),
        (b'{"cutout": [[[1]]]}', "/cutout/0/0"),
    ],
)
def test_bad_fields_are_named(raw, pointer):
    with pytest.raises(InvalidInputError) as caught:
        codec.decode_single(raw)
    assert caught.value.pointer == pointer


def test_wrong_shapes_name_the_cutout(rng):
    for rows in (np.zeros((8, 32)), np.zeros((9, 31)), np.zeros((9, 9, 32))):
        with pytest.raises(InvalidInputError) as caught:
            codec.decode_single(body({"cutout": rows.tolist()}))
        assert caught.value.pointer.startswith("/cutout")


def test_float32_overflow_is_rejected():
    with pytest.raises(InvalidInputError, match="NaN or infinite") as caught:
        codec.decode_single(body({"cutout": np.full((9, 32), 1e39).tolist()}))
    assert caught.value.pointer == "/cutout"


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b'{"cutout": [[1,]]}'])
def test_unparseable_json_is_a_bad_request(raw):
    with pytest.raises(BadRequestError, match="not valid JSON"):
        codec.decode_single(raw)


def test_batch_keeps_order_and_puts_errors_in_place(rng):
    items = [
        {"detectid": "a", "cutout": cutout(rng)},
        {"detectid": "b", "cutout": [[1.0]]},
        {"detectid": 3, "cutout": cutout(rng, 100), "wave": 5200.0},
        "junk",
    ]
    detections = codec.decode_batch(body({"detections": items}), codec.JSON, max_batch=10)
    assert [d.detectid for d in detections] == ["a", "b", 3, None]
    assert [d.error is None for d in detections] == [True, False, True, False]
    assert detections[1].error.pointer == "/detections/1/cutout"
    assert detections[3].error.pointer == "/detections/3"


def test_batch_limits_and_media_types(rng):
    many = body({"detections": [{"cutout": cutout(rng)}] * 3})
    with pytest.raises(PayloadTooLargeError):
        codec.decode_batch(many, codec.JSON, max_batch=2)
    with pytest.raises(InvalidInputError, match="empty"):
        codec.decode_batch(body({"detections": []}), codec.JSON, max_batch=2)
    with pytest.raises(InvalidInputError) as caught:
        codec.decode_batch(body({"items": []}), codec.JSON, max_batch=2)
    assert caught.value.pointer in ("/detections", "/items")
    with pytest.raises(UnsupportedMediaTypeError):
        codec.decode_batch(many, "text/plain", max_batch=2)


def npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_binary_batches_match_json(rng):
    cutouts = rng.standard_normal((5, 9, 100)).astype(np.float32)
    from_npy = codec.decode_batch(npy(cutouts), codec.NPY, max_batch=10)
    ids = np.array(["x1", "x2", "x3", "x4", "x5"])
    from_npz = codec.decode_batch(
        npz(cutout=cutouts, detectid=ids, wave=np.full(5, 4000.0)), codec.NPZ, max_batch=10
    )
    from_json = codec.decode_batch(
        body({"detections": [{"cutout": c.tolist()} for c in cutouts]}), codec.JSON, 10
    )
    for a, b, c in zip(from_npy, from_npz, from_json, strict=True):
        np.testing.assert_array_equal(a.cutout, b.cutout)
        np.testing.assert_array_equal(a.cutout, c.cutout)
    assert [d.detectid for d in from_npy] == [0, 1, 2, 3, 4]
    assert [d.detectid for d in from_npz] == ids.tolist()


def test_binary_item_errors_stay_in_place(rng):
    cutouts = rng.standard_normal((4, 9, 32))
    cutouts[2, 0, 0] = np.nan
    waves = np.array([4000.0, np.inf, 4000.0, 4000.0])
    detections = codec.decode_batch(npz(cutout=cutouts, wave=waves), codec.NPZ, max_batch=10)
    assert [d.error.pointer if d.error else None for d in detections] == [
        None,
        "/wave/1",
        "/cutout/2",
        None,
    ]


@pytest.mark.parametrize(
    ("payload", "error", "pointer"),
    [
        (npy(np.zeros((2, 9, 33), "f4")), InvalidInputError, "/cutout"),
        (npy(np.zeros((2, 9, 32), bool)), InvalidInputError, "/cutout"),
        (npy(np.zeros((9, 32), "f4")), InvalidInputError, "/cutout"),
        (npy(np.array([{"a": 1}], dtype=object)), BadRequestError, "/cutout"),
        (b"\x93NUMPY garbage", BadRequestError, "/cutout"),
        (b"not an array at all", BadRequestError, "/"),
        (npz(cutout=np.zeros((2, 9, 32)), detectid=np.zeros(3)), InvalidInputError, "/detectid"),
        (npz(cutout=np.zeros((2, 9, 32)), extra=np.zeros(2)), InvalidInputError, "/extra"),
        (npz(wave=np.zeros(2)), InvalidInputError, "/cutout"),
    ],
)
def test_bad_binary_bodies(payload, error, pointer):
    media = codec.NPZ if payload[:2] == b"PK" else codec.NPY
    with pytest.raises(error) as caught:
        codec.decode_batch(payload, media, max_batch=10)
    assert caught.value.pointer == pointer


def test_crafted_headers_are_refused_before_allocating(rng):
    huge = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        huge, {"descr": "<f4", "fortran_order": False, "shape": (10**12, 9, 32)}
    )
    with pytest.raises(PayloadTooLargeError):
        codec.decode_batch(huge.getvalue(), codec.NPY, max_batch=4096)
    lying = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        lying, {"descr": "<f4", "fortran_order": False, "shape": (100, 9, 32)}
    )
    with pytest.raises(BadRequestError, match="declares 115200 bytes"):
        codec.decode_batch(lying.getvalue() + b"\0" * 64, codec.NPY, max_batch=4096)
    truncated = npz(cutout=rng.standard_normal((3, 9, 32)))[:-40]
    with pytest.raises(BadRequestError):
        codec.decode_batch(truncated, codec.NPZ, max_batch=4096)


@pytest.mark.parametrize("bad_id", ["x" * 65, "", 2**64, True])
def test_only_valid_ids_are_echoed_beside_errors(bad_id):
    payload = body({"detections": [{"detectid": bad_id, "cutout": [[1.0]]}]})
    (detection,) = codec.decode_batch(payload, codec.JSON, max_batch=4)
    assert detection.detectid is None


def test_a_bad_id_gets_a_clear_message(rng):
    with pytest.raises(InvalidInputError, match="integer \\(int64\\) or a string of 1 to 64"):
        codec.decode_single(body({"detectid": "x" * 65, "cutout": cutout(rng)}))


PLAIN_OR_NOT = [
    {"cutout": [[1.5, -2, 0.0] * 11] * 9, "detectid": 5, "wave": 4000.5},
    {"cutout": [[1] * 100] * 9, "detectid": "HETDEX J1234"},
    {"cutout": [[1, 2]]},
    {"cutout": []},
    {"cutout": [[], []]},
    {"cutout": [[1, True]] * 9},
    {"cutout": [[1, [2]]] * 9},
    {"cutout": [[1] * 32] * 8 + [[1] * 31]},
    {"cutout": [[1e39] * 32] * 9},
    {"cutout": [[18446744073709551615] * 32] * 9},
    {"cutout": [[0.5] * 32] * 9, "detectid": True},
    {"cutout": [[0.5] * 32] * 9, "detectid": [1]},
    {"cutout": [[0.5] * 32] * 9, "detectid": "a[b"},
    {"cutout": [[0.5] * 32] * 9, "wave": -1},
    {"cutout": [[0.5] * 32] * 9, "extra": 1},
    {"cutout": [[0.5] * 32] * 9, "detectid": 755.0, "wave": 4000},
    {"cutout": [[0.5] * 32] * 9, "detectid": None, "wave": None},
    {"cutout": [[0.5] * 32] * 9, "detectid": "", "wave": 0.0},
    {"cutout": [[0.5] * 32] * 9, "detectid": "x" * 64, "wave": 5e-324},
    {"cutout": [[0.5] * 32] * 9, "detectid": "x" * 65},
    {"cutout": [[0.5] * 32] * 9, "detectid": 2**63},
    {"cutout": [[0.5] * 32] * 9, "detectid": -(2**63)},
    {"detectid": 1},
    [1, 2],
]
ODD_BODIES = [
    b'{"cutout": [[1, 2]], "cutout": [[3]]}',
    b'{"cutout": [[NaN]]}',
    b'{"cutout": [[1e400]]}',
    b'{"cutout": [[1]], "detectid": 123456789012345678901234567890}',
]


def outcome(decode, raw: bytes):
    """What a decoder made of a body, comparable across decoders."""
    try:
        decoded = decode(raw)
    except codec.LinescoreError as error:
        return ("refused", type(error).__name__, error.detail, error.pointer)
    return [
        (
            d.detectid,
            d.wave,
            None if d.cutout is None else d.cutout.tobytes(),
            d.error and d.error.problem(),
        )
        for d in (decoded if isinstance(decoded, list) else [decoded])
    ]


@pytest.mark.parametrize("raw", [body(item) for item in PLAIN_OR_NOT] + ODD_BODIES)
def test_the_fast_json_path_decodes_exactly_as_the_full_one(raw, monkeypatch):
    fast = outcome(codec.decode_single, raw)
    batch = b'{"detections": [' + raw + b"]}"
    fast_batch = outcome(lambda b: codec.decode_batch(b, codec.JSON, 16), batch)
    monkeypatch.setattr(codec, "plain_document", lambda raw: None)  # the full path only
    assert outcome(codec.decode_single, raw) == fast
    assert outcome(lambda b: codec.decode_batch(b, codec.JSON, 16), batch) == fast_batch


@pytest.mark.parametrize("columns", [(32, 32, 32), (100, 100, 100), (32, 100, 32)])
def test_a_plain_batch_checked_as_one_array_decodes_as_the_full_path(rng, columns, monkeypatch):
    """Cutouts of one shape are converted and checked together; a float32 overflow still
    fails only its own item, with its own pointer."""
    items = [{"detectid": i, "cutout": cutout(rng, n)} for i, n in enumerate(columns)]
    items[1]["cutout"][4][7] = 1e39
    raw = body({"detections": items})
    fast = outcome(lambda b: codec.decode_batch(b, codec.JSON, 16), raw)
    assert fast[1][3]["pointer"] == "/detections/1/cutout"
    monkeypatch.setattr(codec, "plain_document", lambda raw: None)
    assert outcome(lambda b: codec.decode_batch(b, codec.JSON, 16), raw) == fast


def test_count_byte_counts_as_bytes_count(rng):
    raw = bytes(rng.integers(0, 256, size=3 * codec.COUNT_CHUNK + 17, dtype=np.uint8))
    for byte in (b",", b"[", b"\x00"):
        assert codec.count_byte(raw, byte) == raw.count(byte)
    assert codec.count_byte(b"", b",") == 0


def test_a_plain_batch_never_reaches_the_full_path(rng, monkeypatch):
    def refuse(*_):
        raise AssertionError("the full path ran")

    monkeypatch.setattr(codec, "parse_json", refuse)
    items = [{"detectid": i, "cutout": cutout(rng, 100)} for i in range(3)]
    detections = codec.decode_batch(body({"detections": items}), codec.JSON, 16)
    assert [d.detectid for d in detections] == [0, 1, 2]
    assert codec.decode_single(body(items[0])).detectid == 0
