"""Benchmark of the router against Kamailio and a bare pjsua2 responder.

`python -m bench` (or `make bench`) runs every system under the same SIPp
load on 127.0.0.1 and writes `bench/results/<date>.md`; `bench/README.md`
describes the method.
"""
