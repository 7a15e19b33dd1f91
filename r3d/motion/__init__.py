"""Text-to-motion: HumanML3D feature representation, synthetic data, evaluators and MDM-protocol metrics."""
