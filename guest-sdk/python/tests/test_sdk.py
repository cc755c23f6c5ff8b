"""The Python SDK natively: the framing against FRAMING.md's example, each kind of node
through the harness, stores, and failures as the host sees them."""

import pytest

from flowhost_node import NodeError, Store, filter, flat_map, map, node
from flowhost_node import frame
from flowhost_node.testing import Harness, reset


@pytest.fixture(autouse=True)
def fresh():
    reset()
    yield
    reset()


def test_framing_matches_the_spec_example():
    example = bytes.fromhex("01000000" "02" "0000" "e803000000000000" "02000000" "6869" "0000")
    assert frame.decode(example) == [frame.Record(b"hi", None, 1000, [], 0)]
    assert frame.encode(frame.decode(example)) == example


def test_framing_round_trips_every_item_and_refuses_a_short_batch():
    items = [
        frame.Record(b"p", b"k", -5, [("h", b"v"), ("\u00e9", b"")], 3),
        frame.Error(frame.RETRYABLE, 7, "try later \u2014 soon"),
        frame.Timer(frame.SET, frame.PROCESSING_TIME, 1 << 40, b"key"),
    ]
    raw = frame.encode(items)
    assert frame.decode(raw) == items
    with pytest.raises(frame.FrameError, match="ends at byte"):
        frame.decode(raw[:-1])
    with pytest.raises(frame.FrameError, match="after the batch"):
        frame.decode(raw + b"\0")


def test_map_takes_text_and_returns_json():
    @map
    def shout(text: str) -> dict:
        return {"said": text.upper()}

    assert Harness().run(["hi", "yo"]) == [b'{"said":"HI"}', b'{"said":"YO"}']


def test_an_unannotated_argument_is_the_message_whatever_the_return_annotation():
    @map
    def key_of(msg) -> str:
        return msg.key.decode()

    assert Harness().run([frame.Record(b"x", b"k1")]) == [b"k1"]


def test_filter_and_flat_map():
    @filter
    def big(order: dict) -> bool:
        return order["total"] > 10

    assert Harness().run([{"total": 5}, {"total": 50}]) == [b'{"total":50}']
    # What passes, passes whole: key, timestamp and headers too.
    kept = frame.Record(b'{"total":11}', b"k", 7, [("trace", b"x")])
    assert Harness().batch([kept]) == [kept]
    reset()

    @flat_map
    def words(text: str):
        return text.split()

    assert Harness().run(["a b", "", "c"]) == [b"a", b"b", b"c"]


def test_a_class_node_keeps_state_in_a_store_and_emits_at_the_end():
    @node
    class Count:
        def __init__(self, config):
            self.store = Store(config["store"])
            self.batches = 0

        def process(self, msg, out):
            self.store.incr(msg.text())

        def end_batch(self, out):
            self.batches += 1

        def finish(self, out):
            for key, value in self.store.scan():
                out.emit(f"{key.decode()}={int.from_bytes(value, 'little', signed=True)}")
            out.emit(f"batches={self.batches}")

    h = Harness(config={"store": "counts"}, stores=["counts"])
    assert h.run(["a", "b", "a"]) == []
    assert h.run(["a"]) == []
    assert h.finish() == [b"a=3", b"b=1", b"batches=2"]
    assert h.store("counts").data[b"a"] == (3).to_bytes(8, "little", signed=True)


def test_a_store_not_granted_is_refused_as_fatal():
    @node
    class Nosy:
        def __init__(self):
            self.store = Store("secrets")

        def process(self, msg, out):
            pass

    with pytest.raises(NodeError) as refused:
        Harness(stores=["counts"])
    assert refused.value.kind == "fatal"
    assert "secrets" in refused.value.message


def test_an_exception_fails_its_message_with_its_text_and_withdraws_its_records():
    @node
    class Picky:
        def process(self, msg, out):
            out.emit(b"before")
            if msg.text() == "bad":
                raise ValueError("no bad ones")
            if msg.text() == "later":
                raise NodeError.retryable("busy")

    items = Harness().batch(["ok", "bad", "later"])
    records = [i.payload for i in items if isinstance(i, frame.Record)]
    errors = [(i.kind, i.input_index, i.message) for i in items if isinstance(i, frame.Error)]
    assert records == [b"before"]
    assert errors[0][:2] == (frame.INVALID_INPUT, 1)
    assert errors[0][2].startswith("ValueError: no bad ones at ")
    assert errors[1] == (frame.RETRYABLE, 2, "busy")


def test_output_keeps_the_key_and_timestamp_and_drops_unconnected_ports():
    @node
    class Route:
        def process(self, msg, out):
            out.emit(msg.payload)
            out.emit(b"nowhere", port="audit")
            out.emit(b"late", port="late", key="other", timestamp=1)

    h = Harness(outputs=["out", "late"])
    items = h.batch([frame.Record(b"x", b"k", 99)])
    assert items == [frame.Record(b"x", b"k", 99, [], 0), frame.Record(b"late", b"other", 1, [], 1)]
