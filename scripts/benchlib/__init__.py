"""scripts/bench's parts: common (the build, the SMC proof's constants, output helpers),
tcpbench (tcpbench server and client runs), apps (redis and iperf3 in a private network
namespace) and fanin (the --fanin table). scripts/bench holds the command line and the
tcpbench table; its docstring says what is measured and how.
"""
