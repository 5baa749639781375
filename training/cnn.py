"""The CNN: (N, 2, 9, 32) normalised cutouts to a real-line logit and a penultimate embedding.

About 6.5 MFLOP per cutout: three convolution stages (the second pools the 9 rows to 3 around the
trace), global average pooling, a small embedding layer and a linear score.
"""

import torch
from torch import nn

from service.preprocess import CHANNELS


def conv_block(inputs: int, outputs: int) -> list[nn.Module]:
    return [nn.Conv2d(inputs, outputs, 3, padding=1), nn.BatchNorm2d(outputs), nn.ReLU()]


class LineCNN(nn.Module):
    def __init__(self, embedding_dim: int = 32, widths: tuple[int, int, int] = (16, 32, 64)):
        super().__init__()
        first, second, third = widths
        self.features = nn.Sequential(
            *conv_block(CHANNELS, first),
            *conv_block(first, first),
            nn.MaxPool2d((1, 2)),
            *conv_block(first, second),
            *conv_block(second, second),
            nn.MaxPool2d((3, 2)),
            *conv_block(second, third),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.embed = nn.Sequential(nn.Linear(third, embedding_dim), nn.ReLU())
        self.head = nn.Linear(embedding_dim, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.embed(self.features(x))
        return self.head(embedding).squeeze(1), embedding


class ScoreAndEmbedding(nn.Module):
    """The exported graph: probability-like score in [0, 1] and the embedding."""

    def __init__(self, cnn: LineCNN):
        super().__init__()
        self.cnn = cnn

    def forward(self, cutout: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logit, embedding = self.cnn(cutout)
        return torch.sigmoid(logit), embedding
