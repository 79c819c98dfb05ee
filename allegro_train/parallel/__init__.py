"""Distribution applied from outside the model: process groups, DeepSpeed ZeRO config, (later) Ulysses."""
