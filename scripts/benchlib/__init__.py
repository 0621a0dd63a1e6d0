"""scripts/bench's parts: common (the build, the SMC proof's constants, output helpers),
tcpbench (tcpbench server and client runs), apps (redis, iperf3 and sockperf runs in a
private network namespace), web (nginx and a reverse proxy with wrk), approws (the real
programs' rows: which runs, alternated, and their tables), syscalls (perf stat on the
syscall tracepoints) and fanin (the --fanin table). scripts/bench holds the command line
and the tcpbench rows; its docstring says what is measured and how.
"""
