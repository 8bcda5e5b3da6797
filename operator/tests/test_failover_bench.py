"""Unit tests of the failover benchmark's pure measurements (bench/failover/harness.py)."""

from __future__ import annotations

from bench.failover.harness import DirectAck, rto, split_brain, split_brain_direct


def test_rto_from_fault_to_first_ack_after_the_outage():
    acks = [(1, 9.9), (2, 10.05), (5, 12.5), (6, 12.6)]
    errors = [(3, 10.2), (4, 11.0)]
    assert rto(acks, errors, fault_at=10.0) == 2.5
    # Writes that hang (a frozen or partitioned leader never answers) are an outage too, errors or not.
    assert rto(acks, [], fault_at=10.0) == 2.5
    # No write held up for more than a second: no outage.
    steady = [(i, 9.0 + 0.1 * i) for i in range(40)]
    assert rto(steady, [], fault_at=10.0) == 0.0
    assert rto([(1, 9.0)], [(2, 10.5)], fault_at=10.0) == float("inf")


def test_split_brain_needs_two_primaries_both_labelled_leader():
    samples = [
        ["sample", "100.0", "a-db-0", "f"],
        ["sample", "100.0", "a-db-1", "f"],
        ["sample", "100.0", "a-db-2", "t"],
    ]
    fenced = [(100.2, {"a-db-0": "fenced", "a-db-1": "leader"})]
    assert not split_brain(samples, fenced)
    both = [(100.3, {"a-db-0": "leader", "a-db-1": "leader"})]
    assert split_brain(samples, both)
    far = [(105.0, {"a-db-0": "leader", "a-db-1": "leader"})]
    assert not split_brain(samples, far)


def test_direct_split_brain_is_two_pods_acknowledging_in_overlapping_windows():
    def acks(pod: str, *times: float) -> list[DirectAck]:
        return [DirectAck(pod, t, t + 0.02) for t in times]

    handover = acks("a-db-0", 1.0, 1.1, 1.2) + acks("a-db-1", 5.0, 5.1)
    assert split_brain_direct(handover) == []
    # The old leader acknowledged once more after the new one took a write: their windows overlap.
    late = handover + acks("a-db-0", 5.05)
    assert split_brain_direct(late) == [("a-db-0", "a-db-1")]
    # Overlap by the sending time: a write sent to the new leader before the old one's last ack came back.
    racing = acks("a-db-0", 1.0) + [DirectAck("a-db-1", 1.01, 1.5)]
    assert split_brain_direct(racing) == [("a-db-0", "a-db-1")]
    assert split_brain_direct(acks("a-db-0", 1.0, 2.0)) == []
