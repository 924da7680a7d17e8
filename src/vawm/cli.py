import sys

def main(argv=None):
    print("vawm stub")
    return 0
