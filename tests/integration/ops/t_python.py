"""The Python binding (agents/client/python/hsbus.py) against a real hsbusd.

Run by t_python.sh, which starts the daemon; argv[1] is the agents URL. Every check prints
"ok - ..." or raises (exit 1)."""

import sys
import threading

import hsbus

URL = sys.argv[1]


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok -", what, flush=True)


with hsbus.Client(URL, agent="py-req") as req:
    # Request/reply to the built-in echo agent: str and bin bodies come back as they went.
    rep = req.request(to="echo", body="ping", timeout_ms=5000)
    check(rep.data() == "ping" and rep.sender == "echo" and rep.corr != 0,
          "request to the built-in echo: str body back, from echo, corr set")
    rep = req.request(to="echo", body=b"\x00\x01\xff", timeout_ms=5000)
    check(rep.data() == b"\x00\x01\xff", "a bin body comes back as bytes")

    # Errors carry the daemon's code.
    try:
        req.send(to="nobody-here", body="x")
        check(False, "send to a missing agent raises")
    except hsbus.HsbusError as e:
        check(e.code == hsbus.ENOROUTE and e.name == "HSBUS_ENOROUTE",
              "send to a missing agent raises HSBUS_ENOROUTE")

    # A Python agent in callback style, answering with the reversed text, from several threads
    # of the requester at once (grouped sends on the C side).
    with hsbus.Client(URL, agent="py-rev", handles=["text.reverse"]) as rev:
        rev.serve(lambda m: rev.reply(m, m.data()[::-1]), threads=2)
        results = {}

        def ask(i):
            r = req.request(type="text.reverse", body="abc%d" % i, timeout_ms=5000)
            results[i] = r.data()

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        check(all(results.get(i) == ("abc%d" % i)[::-1] for i in range(8)),
              "a Python handler answers 8 concurrent requests, each with its own reply")

    # Blocking style: send, fetch, ack; an unacked message comes back after a nack.
    with hsbus.Client(URL, agent="py-sink") as sink:
        mid = req.send(to="py-sink", type="note", body="hello", prio=hsbus.PRIO_HIGH)
        got = sink.fetch(max=4, wait_ms=5000)
        check(len(got) == 1 and got[0].id == mid and got[0].data() == "hello"
              and got[0].sender == "py-req" and got[0].prio == hsbus.PRIO_HIGH
              and got[0].deliveries == 1, "fetch returns the sent message with its fields")
        sink.nack(got[0].id, "try again")
        again = sink.fetch(max=4, wait_ms=5000)
        check(len(again) == 1 and again[0].id == mid and again[0].deliveries == 2,
              "a nacked message is redelivered with deliveries = 2")
        sink.ack(again[0].id)
        sink.flush_acks()
        check(sink.fetch(max=4, wait_ms=200) == [], "an acked message is not redelivered")
