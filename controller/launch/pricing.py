"""An offline, clearly labelled ESTIMATE of the hourly on-demand price.

A small table of Linux on-demand list prices in us-east-1 (USD/hour, as published by AWS in
2025). Other regions differ by a few percent to ~30 %, spot is usually much cheaper, and prices
change: this is a hint in the launch summary, never a bill. Unknown types: no estimate.
"""

from __future__ import annotations

PRICES_SOURCE = "us-east-1 Linux on-demand list price (2025), estimate only"

ON_DEMAND_USD_PER_HOUR: dict[str, float] = {
    "t2.micro": 0.0116, "t2.small": 0.023, "t2.medium": 0.0464,
    "t3.nano": 0.0052, "t3.micro": 0.0104, "t3.small": 0.0208, "t3.medium": 0.0416,
    "t3.large": 0.0832, "t3.xlarge": 0.1664, "t3.2xlarge": 0.3328,
    "t4g.nano": 0.0042, "t4g.micro": 0.0084, "t4g.small": 0.0168, "t4g.medium": 0.0336,
    "t4g.large": 0.0672, "t4g.xlarge": 0.1344,
    "m5.large": 0.096, "m5.xlarge": 0.192, "m6i.large": 0.096, "m6i.xlarge": 0.192,
    "m7i.large": 0.1008, "m7i.xlarge": 0.2016, "m7i.2xlarge": 0.4032,
    "m7g.medium": 0.0408, "m7g.large": 0.0816, "m7g.xlarge": 0.1632,
    "c5.large": 0.085, "c6i.large": 0.085, "c7i.large": 0.0893, "c7i.xlarge": 0.1785,
    "c7g.large": 0.0725, "c7g.xlarge": 0.145,
    "r6i.large": 0.126, "r7i.large": 0.1323, "r7g.large": 0.1071,
    "g4dn.xlarge": 0.526, "g5.xlarge": 1.006, "g5.2xlarge": 1.212, "g6.xlarge": 0.8048,
    "p3.2xlarge": 3.06,
}


def hourly_estimate(instance_type: str, count: int = 1) -> float | None:
    price = ON_DEMAND_USD_PER_HOUR.get(instance_type)
    return None if price is None else round(price * count, 4)
