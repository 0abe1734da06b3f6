"""(being written: see /work/server-contract.md)"""
