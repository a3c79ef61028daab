"""A network as FPGA firmware: reduced precision and pruning of the int8 network
(``precision``), the analytic hls4ml-style cost model (``cost``) and the hls4ml project whose C
simulation computes what dse's evaluator computes (``hls_export``).

Nothing is re-exported here: import the modules (``hls_export`` needs hls4ml)."""
