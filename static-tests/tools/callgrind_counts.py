"""Reads a callgrind output file and prints two numbers: the instructions of the whole run, and
the heap allocations it made (calls into malloc, calloc, realloc and the aligned allocators from
code outside them, so musl's realloc calling its own malloc counts once).

    callgrind_counts.py CALLGRIND_OUT

The file must come from a binary with its symbols (musl-build.sh keeps an unstripped copy)."""
import re
import sys

# musl's names and glibc's, whichever the binary has.
ALLOCATORS = {"malloc", "calloc", "realloc", "aligned_alloc", "posix_memalign", "memalign",
              "__libc_malloc", "__libc_malloc_impl", "__libc_calloc", "__libc_realloc"}
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


instructions = None
allocations = 0
current = ""
callee = ""
with open(sys.argv[1]) as out:
    for line in out:
        if line.startswith("fn="):
            current = function_name(line[3:])
        elif line.startswith("cfn="):
            callee = function_name(line[4:])
        elif line.startswith("calls="):
            if is_allocator(callee) and not is_allocator(current):
                allocations += int(line[6:].split()[0])
        elif line.startswith(("summary:", "totals:")) and instructions is None:
            instructions = int(line.split()[1])
if instructions is None:
    sys.exit("callgrind_counts.py: no summary line in %s" % sys.argv[1])
print(instructions, allocations)
