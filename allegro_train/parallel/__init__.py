"""Distribution applied from outside the model: process groups, Ulysses SP, DeepSpeed ZeRO config, memory planning."""
