"""Pictures of what a pre-trained model learned: prototype neighbours (more to come)."""
