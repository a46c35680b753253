"""`make bench`: what an email costs mailqueue's AWS services, and how fast its functions start.

- :mod:`bench.units`: the pure arithmetic (DynamoDB item sizes and capacity units, SQS request
  chunks, Lambda GB-seconds, cost per million emails), unit-tested.
- :mod:`bench.lifecycle`: emails through the local stack (moto in server mode), every AWS call
  counted with botocore event hooks and turned into capacity units.
- :mod:`bench.probe`: fresh-interpreter measurements (cold start, warm CPU with AWS stubbed).
- :mod:`bench.run`: runs them all, writes ``bench/results.json`` and prints the tables.
"""
