import ctypes, sys
libc = ctypes.CDLL("libc.so.6")
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
print("mallopt", libc.mallopt(M_MMAP_MAX, 0), libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(2**31 - 1)))
sys.argv = sys.argv[1:]
exec(open("research/speed/enc2.py").read())
