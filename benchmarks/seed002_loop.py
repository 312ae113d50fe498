"""The seed-002 training loop as the learner wrote it, kept as the baseline of benchmarks/seed_loop.py.

    python benchmarks/seed002_loop.py --images data/synthetic --epochs 10

Logistic regression on 128x128 RGB: `ImageFolder` with Resize((128, 128)), ToTensor() and Normalize to [-1, 1]
applied on every access (so every JPEG is decoded again in every epoch), `random_split` 80/10/10 with a seeded
generator, `DataLoader(batch_size=32, shuffle=True)` with no workers, `BCEWithLogitsLoss`, SGD lr 0.01; every
epoch trains and then computes the validation accuracy; at the end, the test accuracy of the last epoch's model.
It needs an ImageFolder layout (one subfolder per class). It prints one JSON object: the seconds of the whole
loop (from the first import on), of each epoch (training and validation), and the accuracies.
"""

import time

START = time.perf_counter()  # before the heavy imports: they are part of what the seeds' script costs

import argparse  # noqa: E402
import json  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, random_split  # noqa: E402
from torchvision import datasets, transforms  # noqa: E402


@torch.no_grad()
def accuracy(model, loader) -> float:
    model.eval()
    correct = total = 0
    for images, labels in loader:
        predictions = (model(images).squeeze(1) > 0).long()
        correct += (predictions == labels).sum().item()
        total += len(labels)
    return correct / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", required=True, help="an ImageFolder: one subfolder per class")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    transform = transforms.Compose([transforms.Resize((128, 128)), transforms.ToTensor(),
                                    transforms.Normalize([0.5] * 3, [0.5] * 3)])
    dataset = datasets.ImageFolder(args.images, transform=transform)
    n_train, n_val = int(0.8 * len(dataset)), int(0.1 * len(dataset))
    train_set, val_set, test_set = random_split(dataset, [n_train, n_val, len(dataset) - n_train - n_val],
                                                generator=torch.Generator().manual_seed(args.seed))
    train_loader = DataLoader(train_set, batch_size=32, shuffle=True)
    val_loader = DataLoader(val_set, batch_size=32)
    test_loader = DataLoader(test_set, batch_size=32)

    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 128 * 128, 1))
    criterion = nn.BCEWithLogitsLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    epoch_seconds, val_accuracies = [], []
    for _ in range(args.epochs):
        epoch_start = time.perf_counter()
        model.train()
        for images, labels in train_loader:
            optimizer.zero_grad()
            loss = criterion(model(images).squeeze(1), labels.float())
            loss.backward()
            optimizer.step()
        val_accuracies.append(accuracy(model, val_loader))
        epoch_seconds.append(time.perf_counter() - epoch_start)
    test_accuracy = accuracy(model, test_loader)

    print(json.dumps({"epochs": args.epochs, "n_train": len(train_set), "n_val": len(val_set),
                      "n_test": len(test_set), "seconds": round(time.perf_counter() - START, 3),
                      "epoch_seconds": [round(s, 3) for s in epoch_seconds],
                      "val_accuracy": [round(a, 4) for a in val_accuracies],
                      "test_accuracy": round(test_accuracy, 4), "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
