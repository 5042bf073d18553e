"""Predictive-coding integrator: a GRU that guesses each glimpse before it sees it.

At step t, given its state h (B, H) and where the eye is about to land (location code (B, L)),
the integrator predicts the glimpse's features (B, F). It then sees the actual features, forms
the prediction error, and updates its state from both (and the location). The error is what the
glimpse told the network that it did not already expect; its mean square is an optional auxiliary
loss (`prediction_loss` in the trace).
"""

from __future__ import annotations

import torch
from torch import nn


class PredictiveCodingGRU(nn.Module):
    def __init__(self, feature_size: int, hidden_size: int, location_size: int, predictive: bool = True):
        super().__init__()
        self.feature_size, self.hidden_size, self.predictive = feature_size, hidden_size, predictive
        self.initial_state = nn.Parameter(torch.zeros(hidden_size))
        if predictive:
            self.predictor = nn.Sequential(
                nn.Linear(hidden_size + location_size, hidden_size), nn.ReLU(inplace=True), nn.Linear(hidden_size, feature_size)
            )
        inputs = feature_size * (2 if predictive else 1) + location_size
        self.cell = nn.GRUCell(inputs, hidden_size)

    def init_state(self, batch_size: int) -> torch.Tensor:
        """(B, H), a learned starting state shared by every image."""
        return self.initial_state[None].repeat(batch_size, 1)  # a copy: a no-grad view of a leaf confuses hooks

    def predict(self, state: torch.Tensor, location: torch.Tensor) -> torch.Tensor:
        """(B, H), (B, L) -> predicted features (B, F)"""
        return self.predictor(torch.cat([state, location], dim=1))

    def forward(
        self, state: torch.Tensor, features: torch.Tensor, location: torch.Tensor, gain: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """state (B, H), features (B, F), location (B, L), gain (B, 1) or None
        -> new state (B, H), prediction error (B, F) (zeros when predictive coding is off).

        `gain` scales what is taken in (saccadic suppression); the location always passes.
        """
        b = state.shape[0]
        if features.shape != (b, self.feature_size):
            raise ValueError(f"integrator expects features (B={b}, F={self.feature_size}), got {tuple(features.shape)}")
        gain = features.new_ones(b, 1) if gain is None else gain
        if self.predictive:
            # The target is detached: the predictor learns to anticipate the encoder, the encoder is
            # not pushed towards features that are easy to predict.
            prediction = self.predict(state, location)
            sensed = torch.cat([gain * features, gain * (features - prediction)], dim=1)
            prediction_error = features.detach() - prediction
        else:
            prediction_error = torch.zeros_like(features)
            sensed = gain * features
        return self.cell(torch.cat([sensed, location], dim=1), state), prediction_error
