"""Reads a callgrind output file and prints two numbers: the instructions of the whole run, and
the heap allocations it made (calls into the allocator from code outside it: Rust's allocation
shims, malloc, calloc, realloc and the aligned allocators, so a chain such as __rust_alloc ->
malloc -> __libc_malloc_impl counts once).

    callgrind_counts.py CALLGRIND_OUT            # "instructions allocations"
    callgrind_counts.py --callers CALLGRIND_OUT  # the functions that allocate, most calls first

The file must come from a binary with its symbols (musl-build.sh keeps an unstripped copy)."""
import re
import sys

# musl's names and glibc's, whichever the binary has.
ALLOCATORS = {"malloc", "calloc", "realloc", "aligned_alloc", "posix_memalign", "memalign",
              "__libc_malloc", "__libc_malloc_impl", "__libc_calloc", "__libc_realloc",
              "__rust_alloc", "__rust_alloc_zeroed", "__rust_realloc",
              "__rustc::__rust_alloc", "__rustc::__rust_alloc_zeroed", "__rustc::__rust_realloc"}
# Compressed names: "(7) malloc" defines id 7, a later "(7)" refers to it.
NAME = re.compile(r"^\((\d+)\)(?: (.*))?$")

names = {}


def function_name(text):
    found = NAME.match(text.strip())
    if not found:
        return text.strip()
    key, name = found.groups()
    if name is not None:
        names[key] = name
    return names.get(key, "")


def is_allocator(name):
    return name in ALLOCATORS


callers_wanted = sys.argv[1] == "--callers"
path = sys.argv[-1]
instructions = None
allocations = 0
by_caller = {}
current = ""
callee = ""
with open(path) as out:
    for line in out:
        if line.startswith("fn="):
            current = function_name(line[3:])
        elif line.startswith("cfn="):
            callee = function_name(line[4:])
        elif line.startswith("calls="):
            if is_allocator(callee) and not is_allocator(current):
                calls = int(line[6:].split()[0])
                allocations += calls
                by_caller[current] = by_caller.get(current, 0) + calls
        elif line.startswith(("summary:", "totals:")) and instructions is None:
            instructions = int(line.split()[1])
if instructions is None:
    sys.exit("callgrind_counts.py: no summary line in %s" % path)
if callers_wanted:
    for name, calls in sorted(by_caller.items(), key=lambda item: -item[1]):
        print("%10d %s" % (calls, name))
else:
    print(instructions, allocations)
