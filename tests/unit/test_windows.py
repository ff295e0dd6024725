"""segment.windows: the window each segment advertises, in words, where it is 0 or changes."""

from harness.segment import Segment, windows


def seg(src, flags, win, *, wscale=None, ports=(41000, 50000)):
    sport, dport = ports if src == "client" else ports[::-1]
    return {"src": src, "flags": flags, "win": win, "options": [["wscale", wscale]] if wscale is not None else [],
            "sport": sport, "dport": dport}


def test_scaled_windows_state_the_raw_field_and_the_senders_shift():
    segs = [seg("client", "S", 64240, wscale=7), seg("server", "S.", 65160, wscale=10),
            seg("client", ".", 502), seg("client", "P.", 502), seg("server", ".", 63),
            seg("server", ".", 0), seg("server", ".", 0), seg("server", ".", 63), seg("client", "F.", 501)]
    assert windows(segs) == ["win 64240", "win 65160", "win 64256 (raw 502 << 7)", None,
                             "win 64512 (raw 63 << 10)", "win 0", "win 0", "win 64512 (raw 63 << 10)",
                             "win 64128 (raw 501 << 7)"]


def test_no_scaling_unless_both_syns_carry_wscale():
    segs = [seg("client", "S", 64240, wscale=7), seg("server", "S.", 65160), seg("client", ".", 502)]
    assert windows(segs) == ["win 64240", "win 65160", "win 502"]


def test_connections_and_segment_objects_are_kept_apart():
    a = [seg("client", "S", 100, wscale=2), seg("server", "S.", 100, wscale=2), seg("client", ".", 30)]
    b = [seg("client", "S", 100, ports=(41001, 50000)), seg("client", ".", 30, ports=(41001, 50000))]
    assert windows([a[0], b[0], a[1], b[1], a[2]]) == ["win 100", "win 100", "win 100", "win 30",
                                                       "win 120 (raw 30 << 2)"]
    objs = [Segment(0.0, "client", "server", "S", 0, 0, None, 0, (("wscale", 7),), 41000, 50000)]
    assert windows(objs) == ["win 0"]
